//! The shop's fixed facts: what each component is called, which ports it listens on, which
//! database it owns, the event topics, and the limits the gateway and the services both apply. The services (through letsgo-platform) and the
//! operator read them here, so they cannot drift apart. No dependencies: anything may use it.

/// A part of the shop the operator runs as a Deployment: the five services and the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    User,
    Product,
    Cart,
    Order,
    Payment,
    Gateway,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::User,
        Component::Product,
        Component::Cart,
        Component::Order,
        Component::Payment,
        Component::Gateway,
    ];

    /// The gRPC services, without the gateway.
    pub const SERVICES: [Component; 5] = [
        Component::User,
        Component::Product,
        Component::Cart,
        Component::Order,
        Component::Payment,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Component::User => "user",
            Component::Product => "product",
            Component::Cart => "cart",
            Component::Order => "order",
            Component::Payment => "payment",
            Component::Gateway => "gateway",
        }
    }

    /// The gRPC port of a service, the HTTP port of the gateway.
    pub const fn serving_port(self) -> u16 {
        match self {
            Component::User => 9001,
            Component::Product => 9002,
            Component::Cart => 9003,
            Component::Order => 9004,
            Component::Payment => 9005,
            Component::Gateway => 8888,
        }
    }

    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub const fn admin_port(self) -> u16 {
        match self {
            Component::Gateway => 9100,
            other => other.serving_port() + 100,
        }
    }

    /// The PostgreSQL database the component owns, if it has one.
    pub const fn database(self) -> Option<&'static str> {
        match self {
            Component::User => Some("user"),
            Component::Product => Some("product"),
            Component::Order => Some("order"),
            Component::Payment => Some("payment"),
            Component::Cart | Component::Gateway => None,
        }
    }

    /// The binary, as logs, errors and images name it.
    pub fn binary(self) -> String {
        format!("letsgo-{}", self.as_str())
    }
}

/// Every database of the shop, one per service that has one.
pub const DATABASES: [&str; 4] = ["user", "product", "order", "payment"];

/// Every event type of the shop, which is also its topic (before the prefix): one home for the
/// names producers and consumers agree on.
pub mod topics {
    pub const USER_REGISTERED: &str = "user.registered";
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_PAID: &str = "order.paid";
    pub const ORDER_SHIPPED: &str = "order.shipped";
    pub const ORDER_COMPLETED: &str = "order.completed";
    pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
    pub const PAYMENT_FAILED: &str = "payment.failed";
    pub const PAYMENT_REFUNDED: &str = "payment.refunded";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_databases_are_those_of_the_components_that_own_one() {
        let owned: Vec<&str> = Component::ALL.iter().filter_map(|c| c.database()).collect();
        assert_eq!(owned, DATABASES);
    }

    #[test]
    fn every_component_has_ports_of_its_own() {
        let mut ports: Vec<u16> = Component::ALL
            .iter()
            .flat_map(|c| [c.serving_port(), c.admin_port()])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 2 * Component::ALL.len());
    }

    /// `make up`, `make bench` and the footprint script start the binaries from the table in
    /// scripts/services.sh: it must say what these facts say.
    #[test]
    fn the_scripts_run_every_component_on_its_ports() {
        let table = include_str!("../../../scripts/services.sh");
        for component in Component::ALL {
            let binary = component.binary();
            let line = table
                .lines()
                .map(str::trim)
                .find(|line| {
                    line.trim_start_matches('"').split_whitespace().next() == Some(&binary)
                })
                .unwrap_or_else(|| panic!("scripts/services.sh has no line for {binary}"));
            let fields: Vec<&str> = line.trim_matches('"').split_whitespace().collect();
            assert_eq!(
                fields[1..3],
                [
                    component.serving_port().to_string(),
                    component.admin_port().to_string()
                ],
                "{binary} in scripts/services.sh"
            );
        }
    }
}

/// Limits the gateway and the services both apply (the gateway first, to refuse early; the
/// service again, as its own guard): one home, so the two never disagree.
pub mod limits {
    /// Units of one product in a cart line or an order line: 1 to this.
    pub const QUANTITY_MAX: i64 = 999;
    /// Largest page a list answers; a larger `pageSize` is cut to it.
    pub const PAGE_SIZE_MAX: i32 = 100;
    /// Page size of product lists and searches when the client names none.
    pub const PRODUCT_PAGE_SIZE_DEFAULT: i32 = 20;
    /// Page size of a buyer's order list when the client names none.
    pub const ORDER_PAGE_SIZE_DEFAULT: i32 = 10;
    /// Longest `Idempotency-Key` a client may send (UUIDs and similar fit with room).
    pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 128;
    /// Largest payment-provider callback body the shop reads: a real one is a few hundred
    /// bytes, and each signature check hashes the whole body.
    pub const CALLBACK_BODY_MAX_BYTES: usize = 4 * 1024;
    /// Orders in one call that commits reservations or records sales (the order service
    /// settles with the product service in batches of at most this many).
    pub const SETTLEMENT_BATCH_MAX: usize = 200;

    // What the API takes in its fields. The gateway's OpenAPI document states each of these
    // (services/gateway/src/openapi.rs), so a client generated from it refuses what we refuse.

    /// A username at registration: this many characters at least, ...
    pub const USERNAME_MIN_CHARS: usize = 3;
    /// ... and at most this many (the original's documented rule).
    pub const USERNAME_MAX_CHARS: usize = 20;
    /// The longest username an existing account may have: the original declared 3–20 but
    /// never enforced it, and its column holds 50, so accounts it made may have names up to
    /// this long. Signing in takes them; registering a new one does not.
    pub const USERNAME_STORED_MAX_CHARS: usize = 50;
    /// The characters of a new username (ECMAScript and Rust `regex` syntax alike).
    pub const USERNAME_PATTERN: &str = "^[A-Za-z0-9_-]+$";
    pub const PASSWORD_MIN_CHARS: usize = 6;
    /// Bounds the work one sign-up or sign-in asks of the password hasher.
    pub const PASSWORD_MAX_CHARS: usize = 128;
    pub const EMAIL_MAX_CHARS: usize = 254;
    /// A phone number: exactly this many ASCII digits.
    pub const PHONE_DIGITS: usize = 11;
    pub const AVATAR_URL_MAX_CHARS: usize = 512;
    pub const PRODUCT_NAME_MAX_CHARS: usize = 200;
    pub const PRODUCT_DESCRIPTION_MAX_CHARS: usize = 5000;
    pub const PRODUCT_CATEGORY_MAX_CHARS: usize = 50;
    pub const PRODUCT_IMAGES_MAX: usize = 20;
    pub const PRODUCT_IMAGE_URL_MAX_BYTES: usize = 512;
    pub const PRODUCT_ATTRIBUTES_MAX_BYTES: usize = 16 * 1024;
    /// The highest price, in cents (100 000 000 yuan).
    pub const PRODUCT_PRICE_MAX_CENTS: i64 = 10_000_000_000;
    pub const PRODUCT_STOCK_MAX: i64 = 1_000_000_000;
    pub const REVIEW_RATING_MAX: i32 = 5;
    pub const REVIEW_COMMENT_MAX_CHARS: usize = 1000;
    /// A search keyword, catalogue or orders.
    pub const KEYWORD_MAX_CHARS: usize = 100;
    /// Lines of one order.
    pub const ORDER_LINES_MAX: usize = 50;
    /// A delivery address, surrounding white space aside.
    pub const ADDRESS_MIN_CHARS: usize = 10;
    pub const ADDRESS_MAX_CHARS: usize = 200;
    pub const REMARK_MAX_CHARS: usize = 500;
    pub const CARRIER_MAX_CHARS: usize = 50;
    pub const TRACKING_NO_MAX_CHARS: usize = 64;
    /// Order statuses run from 1 (pending) to this (cancelled); 0 filters nothing.
    pub const ORDER_STATUS_MAX: i32 = 5;
    /// Payment types run from 1 (Alipay) to this (card).
    pub const PAYMENT_TYPE_MAX: i32 = 3;
    /// The payment provider's own transaction number in a callback.
    pub const TRADE_NO_MAX_BYTES: usize = 128;
    /// Digits before the decimal point of an amount of money (two may follow it).
    pub const AMOUNT_WHOLE_DIGITS_MAX: usize = 12;
}
