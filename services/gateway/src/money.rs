//! [`Yuan`]: an amount in request and response bodies, read and written with the platform's
//! exact [`letsgo_platform::money`] rules.

use letsgo_platform::money::{parse_cents, yuan};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An amount of money: cents inside, yuan on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuan(pub i64);

impl<'de> Deserialize<'de> for Yuan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: &RawValue = Deserialize::deserialize(deserializer)?;
        parse_cents(raw.get())
            .map(Yuan)
            .map_err(|error| D::Error::custom(error.message))
    }
}

impl Serialize for Yuan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(yuan(self.0))
    }
}

impl utoipa::PartialSchema for Yuan {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("Yuan, with at most two decimals (99.99)"))
            .minimum(Some(0))
            .into()
    }
}

impl utoipa::ToSchema for Yuan {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_travel_as_yuan_in_json() {
        let parsed: Yuan = serde_json::from_str("19.9").unwrap();
        assert_eq!(parsed, Yuan(1990));
        assert!(serde_json::from_str::<Yuan>("19.999").is_err());
        assert!(serde_json::from_str::<Yuan>("\"19.9\"").is_err());
        assert_eq!(serde_json::to_string(&Yuan(1990)).unwrap(), "19.9");
    }
}
