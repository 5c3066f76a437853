//! The OpenAPI document served at `/api/openapi.json`, built from the handlers' annotations so
//! it cannot drift from the routes.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, cart, order, payment, product, system, user};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "letsgo",
        description = "The letsgo shop API: the original letsGO gateway's contract. Every answer is the envelope {code, msg, data}; errors carry data null, an error code and the HTTP status beside it."
    ),
    paths(
        system::health,
        system::openapi,
        user::register,
        user::login,
        user::get_profile,
        user::update_profile,
        product::list,
        product::detail,
        product::search,
        product::add,
        product::update,
        product::change_stock,
        product::unlist,
        product::review,
        product::reviews,
        cart::get,
        cart::add,
        cart::update,
        cart::remove,
        cart::clear,
        order::create,
        order::list,
        order::detail,
        order::cancel,
        order::confirm,
        admin::orders,
        admin::ship,
        admin::products,
        payment::create,
        payment::query,
        payment::callback,
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

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises")
}
