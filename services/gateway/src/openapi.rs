//! The documented routes and the OpenAPI document served at `/api/openapi.json`: each route is
//! written once, as its handler's `#[utoipa::path]`, which gives both the router its path and
//! method and the document its entry, so the two cannot drift apart.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::routes::{admin, cart, order, payment, product, system, user};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "letsgo",
        description = "The letsgo shop API: the original letsGO gateway's contract. Every answer is the envelope {code, msg, data}; errors carry data null, an error code and the HTTP status beside it."
    ),
    modifiers(&BearerToken),
    tags(
        (name = "system", description = "The gateway itself"),
        (name = "user", description = "Accounts and profiles"),
        (name = "product", description = "The catalogue, stock and reviews"),
        (name = "cart", description = "The signed-in user's cart"),
        (name = "order", description = "The signed-in user's orders"),
        (name = "payment", description = "Paying orders, and the provider's webhook"),
        (name = "admin", description = "Every order, shipping, and the whole catalogue, for admins"),
    )
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every documented route, with its handler. Routes sharing a path share a `routes!`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::openapi))
        .routes(routes!(user::register))
        .routes(routes!(user::login))
        .routes(routes!(user::get_profile, user::update_profile))
        .routes(routes!(product::list))
        .routes(routes!(product::detail))
        .routes(routes!(product::search))
        .routes(routes!(product::add))
        .routes(routes!(product::update))
        .routes(routes!(product::change_stock))
        .routes(routes!(product::unlist))
        .routes(routes!(product::review))
        .routes(routes!(product::reviews))
        .routes(routes!(cart::get))
        .routes(routes!(cart::add))
        .routes(routes!(cart::update))
        .routes(routes!(cart::remove))
        .routes(routes!(cart::clear))
        .routes(routes!(order::create))
        .routes(routes!(order::list))
        .routes(routes!(order::detail))
        .routes(routes!(order::cancel))
        .routes(routes!(order::confirm))
        .routes(routes!(admin::orders))
        .routes(routes!(admin::ship))
        .routes(routes!(admin::products))
        .routes(routes!(payment::create))
        .routes(routes!(payment::query))
        .routes(routes!(payment::callback))
}

/// The document as JSON.
pub fn document() -> serde_json::Value {
    let (_, document) = routes().split_for_parts();
    serde_json::to_value(document).expect("the OpenAPI document serialises")
}
