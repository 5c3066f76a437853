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

/// The document as JSON, with the rules the API enforces written into its schemas.
pub fn document() -> serde_json::Value {
    let (_, document) = routes().split_for_parts();
    let mut document = serde_json::to_value(document).expect("the OpenAPI document serialises");
    rules::state(&mut document);
    document
}

/// The rules the gateway and the services enforce on every field, stated in the document
/// (`minLength`, `maxLength`, `pattern`, `minimum`, `maximum`, `multipleOf`, `enum`) from the
/// constants the checks themselves use (`letsgo_facts::limits`), so a client generated from the
/// document, or a tool like schemathesis, refuses what the server refuses and sends nothing
/// schema-valid that it would refuse.
///
/// They are written onto the generated schemas here, in one table, rather than in `#[schema]`
/// attributes, because those take only literals. Each entry names its schema and property (or
/// operation and parameter); a name that no longer exists stops `document()` with a panic, which
/// the unit tests below reach first.
///
/// Where a rule cannot be said exactly, the document says less than the server takes, never
/// more: every schema-valid value is accepted. Patterns are ECMAScript, and name every
/// character class explicitly (`\s` differs between regex dialects).
mod rules {
    use letsgo_platform::limits::*;
    use serde_json::{Value, json};

    /// What Rust's `char::is_whitespace` (and so `str::trim`) counts as white space.
    const WHITE_SPACE: &str =
        r"\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
    /// Rust's `char::is_control`: the C0 and C1 controls.
    const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
    /// The invisible characters the order service refuses in shipping details, besides controls.
    const INVISIBLE: &str = r"\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff";
    /// PostgreSQL refuses NUL in text, so every stored or searched string refuses it (1001).
    const NUL: &str = r"\u0000";

    /// Text without NUL.
    fn text() -> String {
        format!("^[^{NUL}]*$")
    }

    /// Text without NUL holding something besides white space (the check trims, then asks for
    /// anything left).
    fn not_blank() -> String {
        format!("^[^{NUL}]*[^{NUL}{WHITE_SPACE}][^{NUL}]*$")
    }

    /// Text whose trimmed part is `min..=max` characters, none of them in `barred`: white space
    /// around it, then a first and last character that are not white space.
    fn trimmed(min: usize, max: usize, barred: &str) -> String {
        assert!(min >= 1 && max >= 2 && min <= max);
        let inner = format!("[^{barred}]{{{},{}}}", min.saturating_sub(2), max - 2);
        let edge = format!("[^{barred}{WHITE_SPACE}]");
        if min == 1 {
            format!("^[{WHITE_SPACE}]*{edge}({inner}{edge})?[{WHITE_SPACE}]*$")
        } else {
            format!("^[{WHITE_SPACE}]*{edge}{inner}{edge}[{WHITE_SPACE}]*$")
        }
    }

    fn phone() -> String {
        format!("^[0-9]{{{PHONE_DIGITS}}}$")
    }

    /// An 11-digit phone, or empty for none.
    fn optional_phone() -> String {
        format!("^([0-9]{{{PHONE_DIGITS}}})?$")
    }

    /// One `@`, a local part, a domain of two or more dot-separated labels, no white space and
    /// no controls.
    fn email() -> Value {
        let part = format!("[^@.{WHITE_SPACE}{CONTROL}]");
        json!({
            "maxLength": EMAIL_MAX_CHARS,
            "pattern": format!("^[^@{WHITE_SPACE}{CONTROL}]+@{part}+(\\.{part}+)+$"),
        })
    }

    /// Yuan as a JSON number with at most two decimals, up to the largest amount the parser
    /// takes (`AMOUNT_WHOLE_DIGITS_MAX` digits before the point), with `bounds` over that.
    fn yuan(bounds: Value) -> Value {
        let largest = 10f64.powi(AMOUNT_WHOLE_DIGITS_MAX as i32) - 0.01;
        let mut rule = json!({"multipleOf": 0.01, "maximum": largest});
        merge(&mut rule, bounds);
        rule
    }

    /// A product's attributes: a JSON object in a string, or empty for none. The service takes
    /// any object up to 16 KiB; a pattern cannot say "a JSON object", so it admits the flat ones
    /// (string keys; string, number, boolean or null values), which every object of the original
    /// we know of is, and the media type and schema say the rest to those who read them.
    fn attributes() -> Value {
        let string = format!(r#""[^"\\{CONTROL}]*""#);
        let value =
            format!(r"({string}|-?(0|[1-9][0-9]{{0,14}})(\.[0-9]{{1,6}})?|true|false|null)");
        let pair = format!(" ?{string} ?: ?{value}");
        json!({
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
            "pattern": format!(r"^(\{{({pair}( ?,{pair})*)? ?\}})?$"),
            // The service measures bytes: a quarter of them in characters fits any text.
            "maxLength": PRODUCT_ATTRIBUTES_MAX_BYTES / 4,
        })
    }

    /// A product's fields, for adding and updating alike.
    fn product_fields() -> Vec<(&'static str, Value)> {
        let image = json!({
            "maxLength": PRODUCT_IMAGE_URL_MAX_BYTES,
            // The service counts bytes: printable ASCII keeps bytes and characters one, so
            // other characters (percent-encode them) are left out.
            "pattern": "^(https?://|/)[!-~]*$",
        });
        vec![
            (
                "name",
                json!({"maxLength": PRODUCT_NAME_MAX_CHARS, "pattern": not_blank()}),
            ),
            (
                "description",
                json!({"maxLength": PRODUCT_DESCRIPTION_MAX_CHARS, "pattern": text()}),
            ),
            (
                "category",
                json!({"maxLength": PRODUCT_CATEGORY_MAX_CHARS, "pattern": not_blank()}),
            ),
            (
                "images",
                json!({"minItems": 1, "maxItems": PRODUCT_IMAGES_MAX, "items": image}),
            ),
            (
                "price",
                yuan(json!({"exclusiveMinimum": 0, "maximum": PRODUCT_PRICE_MAX_CENTS / 100})),
            ),
            ("attributes", attributes()),
        ]
    }

    /// `(schema, property, rule)`: the properties of request bodies.
    fn body_rules() -> Vec<(&'static str, &'static str, Value)> {
        let quantity = json!({"minimum": 1, "maximum": QUANTITY_MAX});
        let mut rules = vec![
            (
                "RegisterRequest",
                "username",
                json!({"minLength": USERNAME_MIN_CHARS, "maxLength": USERNAME_MAX_CHARS, "pattern": USERNAME_PATTERN}),
            ),
            (
                "RegisterRequest",
                "password",
                json!({"minLength": PASSWORD_MIN_CHARS, "maxLength": PASSWORD_MAX_CHARS}),
            ),
            ("RegisterRequest", "email", email()),
            (
                "RegisterRequest",
                "phone",
                json!({"pattern": optional_phone()}),
            ),
            (
                "LoginRequest",
                "username",
                json!({"maxLength": USERNAME_STORED_MAX_CHARS, "pattern": not_blank()}),
            ),
            (
                "LoginRequest",
                "password",
                json!({"maxLength": PASSWORD_MAX_CHARS}),
            ),
            ("UpdateProfileRequest", "email", email()),
            (
                "UpdateProfileRequest",
                "phone",
                json!({"pattern": optional_phone()}),
            ),
            (
                "UpdateProfileRequest",
                "avatar",
                json!({
                    "maxLength": AVATAR_URL_MAX_CHARS,
                    "pattern": format!("^(https?://[^{NUL}{WHITE_SPACE}]*)?$"),
                }),
            ),
            ("CartLineRequest", "quantity", quantity.clone()),
            ("OrderLineRequest", "quantity", quantity),
            (
                "CreateOrderRequest",
                "items",
                json!({
                    "minItems": 1,
                    "maxItems": ORDER_LINES_MAX,
                    "description": format!("1 to {ORDER_LINES_MAX} lines. Lines of the same product are added together, and their sum too must be 1 to {QUANTITY_MAX} (a rule no schema keyword can state)."),
                }),
            ),
            (
                "CreateOrderRequest",
                "address",
                json!({"pattern": trimmed(ADDRESS_MIN_CHARS, ADDRESS_MAX_CHARS, NUL)}),
            ),
            ("CreateOrderRequest", "phone", json!({"pattern": phone()})),
            (
                "CreateOrderRequest",
                "remark",
                json!({"maxLength": REMARK_MAX_CHARS, "pattern": text()}),
            ),
            (
                "ShipRequest",
                "carrier",
                json!({"pattern": trimmed(1, CARRIER_MAX_CHARS, &format!("{CONTROL}{INVISIBLE}"))}),
            ),
            (
                "ShipRequest",
                "trackingNo",
                json!({"pattern": trimmed(1, TRACKING_NO_MAX_CHARS, &format!("{CONTROL}{INVISIBLE}"))}),
            ),
            (
                "AddProductRequest",
                "stock",
                json!({"minimum": 0, "maximum": PRODUCT_STOCK_MAX}),
            ),
            (
                "ChangeStockRequest",
                "stock",
                json!({"minimum": 0, "maximum": PRODUCT_STOCK_MAX}),
            ),
            (
                "ChangeStockRequest",
                "delta",
                json!({"minimum": -PRODUCT_STOCK_MAX, "maximum": PRODUCT_STOCK_MAX}),
            ),
            // Stock is changed through PUT /api/v1/product/stock only: no value is accepted.
            ("UpdateProductRequest", "stock", json!({"not": {}})),
            (
                "ReviewRequest",
                "rating",
                json!({"minimum": 1, "maximum": REVIEW_RATING_MAX}),
            ),
            (
                "ReviewRequest",
                "comment",
                json!({"maxLength": REVIEW_COMMENT_MAX_CHARS, "pattern": text()}),
            ),
            (
                "CreatePaymentRequest",
                "paymentType",
                json!({"minimum": 1, "maximum": PAYMENT_TYPE_MAX}),
            ),
            (
                "CreatePaymentRequest",
                "amount",
                yuan(json!({"minimum": 0})),
            ),
            ("CallbackBody", "amount", yuan(json!({"minimum": 0}))),
            (
                "CallbackBody",
                "tradeNo",
                json!({"maxLength": TRADE_NO_MAX_BYTES, "pattern": "^[ -~]*$"}),
            ),
        ];
        // Ids are positive: the services refuse 0 and below (1001) or find nothing (404).
        for (schema, property) in [
            ("CartLineRequest", "productId"),
            ("OrderLineRequest", "productId"),
            ("ChangeStockRequest", "productId"),
            ("UnlistRequest", "productId"),
            ("ReviewRequest", "productId"),
            ("UpdateProductRequest", "id"),
            ("CreatePaymentRequest", "orderId"),
            ("CallbackBody", "orderId"),
        ] {
            rules.push((schema, property, json!({"minimum": 1})));
        }
        for (property, rule) in product_fields() {
            rules.push(("AddProductRequest", property, rule.clone()));
            rules.push(("UpdateProductRequest", property, rule));
        }
        rules
    }

    /// `(path, method, parameter, rule)`: query, path and header parameters.
    fn parameter_rules() -> Vec<(&'static str, &'static str, &'static str, Value)> {
        let page = json!({"minimum": 1});
        let status = json!({"minimum": 0, "maximum": ORDER_STATUS_MAX});
        let search = json!({"maxLength": KEYWORD_MAX_CHARS, "pattern": not_blank()});
        let mut rules = vec![
            (
                "/api/v1/product/list",
                "get",
                "sortBy",
                json!({"enum": ["created", "price", "sales", ""]}),
            ),
            (
                "/api/v1/product/list",
                "get",
                "order",
                json!({"enum": ["asc", "desc", ""]}),
            ),
            (
                "/api/v1/product/list",
                "get",
                "category",
                json!({"pattern": text()}),
            ),
            ("/api/v1/product/search", "get", "keyword", search),
            (
                "/api/v1/admin/products",
                "get",
                "keyword",
                // Blank lists everything; anything else is searched.
                json!({"maxLength": KEYWORD_MAX_CHARS, "pattern": text()}),
            ),
            ("/api/v1/order/list", "get", "status", status.clone()),
            ("/api/v1/admin/orders", "get", "status", status),
            (
                "/api/v1/admin/orders",
                "get",
                "keyword",
                json!({"pattern": format!("^[{WHITE_SPACE}]*([^{CONTROL}]{{0,{KEYWORD_MAX_CHARS}}})?[{WHITE_SPACE}]*$")}),
            ),
            (
                "/api/v1/payment/create",
                "post",
                "Idempotency-Key",
                json!({"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_CHARS, "pattern": "^[!-~]+$"}),
            ),
        ];
        for (path, method, id) in [
            ("/api/v1/product/detail/{id}", "get", "id"),
            ("/api/v1/product/reviews/{id}", "get", "id"),
            ("/api/v1/cart/remove/{itemId}", "delete", "itemId"),
            ("/api/v1/order/detail/{id}", "get", "id"),
            ("/api/v1/order/cancel/{id}", "put", "id"),
            ("/api/v1/order/confirm/{id}", "put", "id"),
            ("/api/v1/admin/orders/{id}/ship", "put", "id"),
            ("/api/v1/payment/query/{orderId}", "get", "orderId"),
        ] {
            rules.push((path, method, id, json!({"minimum": 1})));
        }
        for (path, method) in [
            ("/api/v1/product/list", "get"),
            ("/api/v1/product/search", "get"),
            ("/api/v1/product/reviews/{id}", "get"),
            ("/api/v1/order/list", "get"),
            ("/api/v1/admin/orders", "get"),
            ("/api/v1/admin/products", "get"),
        ] {
            rules.push((path, method, "page", page.clone()));
            rules.push((path, method, "pageSize", page.clone()));
        }
        rules
    }

    /// `(schema, rule)`: rules about a body as a whole.
    fn schema_rules() -> Vec<(&'static str, Value)> {
        // Exactly one of stock and delta is a number (null is the same as absent).
        let only = |given: &str, other: &str| {
            json!({
                "required": [given],
                "properties": {given: {"type": "integer"}, other: {"type": "null"}},
            })
        };
        vec![(
            "ChangeStockRequest",
            json!({"oneOf": [only("stock", "delta"), only("delta", "stock")]}),
        )]
    }

    pub(super) fn state(document: &mut Value) {
        for (schema, rule) in schema_rules() {
            let target = document
                .pointer_mut(&format!("/components/schemas/{schema}"))
                .unwrap_or_else(|| panic!("the document has no schema {schema}"));
            merge(target, rule);
        }
        for (schema, property, rule) in body_rules() {
            let target = document
                .pointer_mut(&format!(
                    "/components/schemas/{schema}/properties/{property}"
                ))
                .unwrap_or_else(|| panic!("the document has no {schema}.{property}"));
            merge(target, rule);
        }
        for (path, method, name, rule) in parameter_rules() {
            let parameters = document["paths"][path][method]["parameters"]
                .as_array_mut()
                .unwrap_or_else(|| panic!("the document has no parameters of {method} {path}"));
            let parameter = parameters
                .iter_mut()
                .find(|parameter| parameter["name"] == name)
                .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
            merge(&mut parameter["schema"], rule);
        }
    }

    /// Sets each key of `rule` on `target`, descending into objects (an array's `items`).
    fn merge(target: &mut Value, rule: Value) {
        let Value::Object(rule) = rule else {
            unreachable!("rules are objects")
        };
        for (key, value) in rule {
            match (target.get_mut(&key), value) {
                (Some(existing @ Value::Object(_)), value @ Value::Object(_)) if key == "items" => {
                    merge(existing, value)
                }
                (_, value) => {
                    target[key.as_str()] = value;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use letsgo_platform::limits::*;

    use super::document;

    #[test]
    fn every_rule_finds_its_place_in_the_document() {
        let document = document();
        let username =
            &document["components"]["schemas"]["RegisterRequest"]["properties"]["username"];
        assert_eq!(username["maxLength"], USERNAME_MAX_CHARS);
        assert_eq!(username["pattern"], USERNAME_PATTERN);
        let login = &document["components"]["schemas"]["LoginRequest"]["properties"]["username"];
        assert_eq!(login["maxLength"], USERNAME_STORED_MAX_CHARS);
    }

    /// The document states the services' limits from `letsgo_facts::limits`; the services that
    /// still keep a copy of their own must agree with it.
    #[test]
    fn the_services_check_the_limits_the_document_states() {
        use letsgo_order::rules as order;
        use letsgo_payment::rules as payment;
        use letsgo_product::rules as product;
        assert_eq!(product::NAME_MAX, PRODUCT_NAME_MAX_CHARS);
        assert_eq!(product::DESCRIPTION_MAX, PRODUCT_DESCRIPTION_MAX_CHARS);
        assert_eq!(product::CATEGORY_MAX, PRODUCT_CATEGORY_MAX_CHARS);
        assert_eq!(product::IMAGES_MAX, PRODUCT_IMAGES_MAX);
        assert_eq!(product::IMAGE_URL_MAX, PRODUCT_IMAGE_URL_MAX_BYTES);
        assert_eq!(product::ATTRIBUTES_MAX_BYTES, PRODUCT_ATTRIBUTES_MAX_BYTES);
        assert_eq!(product::PRICE_MAX_CENTS, PRODUCT_PRICE_MAX_CENTS);
        assert_eq!(product::STOCK_MAX, PRODUCT_STOCK_MAX);
        assert_eq!(product::COMMENT_MAX, REVIEW_COMMENT_MAX_CHARS);
        assert_eq!(product::KEYWORD_MAX, KEYWORD_MAX_CHARS);
        assert!(product::check_review(REVIEW_RATING_MAX, "").is_ok());
        assert!(product::check_review(REVIEW_RATING_MAX + 1, "").is_err());
        assert_eq!(order::LINES_MAX, ORDER_LINES_MAX);
        assert_eq!(order::ADDRESS_MIN, ADDRESS_MIN_CHARS);
        assert_eq!(order::ADDRESS_MAX, ADDRESS_MAX_CHARS);
        assert_eq!(order::REMARK_MAX, REMARK_MAX_CHARS);
        assert_eq!(order::CARRIER_MAX, CARRIER_MAX_CHARS);
        assert_eq!(order::TRACKING_NO_MAX, TRACKING_NO_MAX_CHARS);
        assert_eq!(order::KEYWORD_MAX, KEYWORD_MAX_CHARS);
        assert!(order::status_filter(ORDER_STATUS_MAX).is_ok());
        assert!(order::status_filter(ORDER_STATUS_MAX + 1).is_err());
        assert_eq!(payment::TRADE_NO_MAX, TRADE_NO_MAX_BYTES);
        assert!(payment::PaymentType::from_code(PAYMENT_TYPE_MAX).is_ok());
        assert!(payment::PaymentType::from_code(PAYMENT_TYPE_MAX + 1).is_err());
        let largest = format!("{}.99", "9".repeat(AMOUNT_WHOLE_DIGITS_MAX));
        assert!(letsgo_platform::money::parse_cents(&largest).is_ok());
        assert!(letsgo_platform::money::parse_cents(&format!("1{largest}")).is_err());
    }
}
