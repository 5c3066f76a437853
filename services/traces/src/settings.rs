//! Where spans go and how, read from the standard OpenTelemetry variables as the specification
//! defines them. A value letsgo does not support stops the binary with the variable's name: a
//! collector that silently receives nothing is worse than a process that will not start.

use std::fmt;

use percent_encoding::percent_decode_str;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (a collector's port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318): the specification's default.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }

    fn default_endpoint(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "http://localhost:4317",
            OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces",
        }
    }
}

/// Where spans go, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub protocol: OtlpProtocol,
    /// For gRPC the collector's address (`http://collector:4317`); for HTTP the URL the spans
    /// are posted to (`http://collector:4318/v1/traces`).
    pub endpoint: String,
    /// Sent with every export (a hosted backend's key), from `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: Vec<(String, String)>,
}

/// An OpenTelemetry variable whose value letsgo cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub setting: &'static str,
    pub problem: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for SettingError {}

fn refuse(setting: &'static str, problem: impl Into<String>) -> SettingError {
    SettingError {
        setting,
        problem: problem.into(),
    }
}

const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
const TRACES_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";

impl OtlpSettings {
    /// The settings the environment gives: `None` when tracing is off (no endpoint named and
    /// no `OTEL_TRACES_EXPORTER=otlp`, or `OTEL_TRACES_EXPORTER=none`, or
    /// `OTEL_SDK_DISABLED=true`), an error naming the variable when a value cannot be honoured.
    pub fn from_env() -> Result<Option<OtlpSettings>, SettingError> {
        OtlpSettings::from_vars(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpSettings>, SettingError> {
        // An empty variable is an unset one, as the specification says.
        let set = |name: &str| {
            var(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let first = |signal: &'static str, general: &'static str| {
            set(signal)
                .map(|value| (signal, value))
                .or_else(|| set(general).map(|value| (general, value)))
        };

        match set(SDK_DISABLED).map(|value| value.to_ascii_lowercase()) {
            Some(value) if value == "true" => return Ok(None),
            Some(value) if value != "false" => {
                return Err(refuse(SDK_DISABLED, "is true or false"));
            }
            _ => {}
        }
        let exporter_named = match set(TRACES_EXPORTER).as_deref() {
            None => false,
            Some("none") => return Ok(None),
            Some("otlp") => true,
            Some(other) => {
                return Err(refuse(
                    TRACES_EXPORTER,
                    format!("'{other}' is not supported: letsgo exports with otlp, or none"),
                ));
            }
        };
        let protocol = match first(TRACES_PROTOCOL, PROTOCOL) {
            None => OtlpProtocol::HttpProtobuf,
            Some((_, value)) if value == "grpc" => OtlpProtocol::Grpc,
            Some((_, value)) if value == "http/protobuf" => OtlpProtocol::HttpProtobuf,
            Some((name, value)) if value == "http/json" => {
                return Err(refuse(
                    name,
                    format!("'{value}' is not supported: use http/protobuf or grpc"),
                ));
            }
            Some((name, value)) => {
                return Err(refuse(
                    name,
                    format!("'{value}' is not a protocol: grpc, http/protobuf"),
                ));
            }
        };
        let endpoint = match (set(TRACES_ENDPOINT), set(ENDPOINT)) {
            // The signal's own endpoint is used as it is written.
            (Some(endpoint), _) => checked_endpoint(TRACES_ENDPOINT, endpoint)?,
            // The general one is a base: over HTTP each signal has its own path below it.
            (None, Some(base)) => {
                let base = checked_endpoint(ENDPOINT, base)?;
                match protocol {
                    OtlpProtocol::Grpc => base,
                    OtlpProtocol::HttpProtobuf => {
                        format!("{}/v1/traces", base.trim_end_matches('/'))
                    }
                }
            }
            (None, None) if exporter_named => protocol.default_endpoint().to_owned(),
            // Nothing asks for traces: off, at no cost.
            (None, None) => return Ok(None),
        };
        let headers = match first(TRACES_HEADERS, HEADERS) {
            Some((name, value)) => parse_pairs(name, &value)?,
            None => Vec::new(),
        };
        if let Some(value) = set(RESOURCE_ATTRIBUTES) {
            parse_pairs(RESOURCE_ATTRIBUTES, &value)?;
        }
        if let Some((name, value)) = first(TRACES_COMPRESSION, COMPRESSION)
            && value != "none"
        {
            return Err(refuse(
                name,
                format!("'{value}' is not supported: spans are sent uncompressed (none)"),
            ));
        }
        check_sampler(set(SAMPLER).as_deref(), set(SAMPLER_ARG).as_deref())?;
        Ok(Some(OtlpSettings {
            protocol,
            endpoint,
            headers,
        }))
    }
}

/// An endpoint is an `http://host:port[/path]` URL. TLS to the collector is not built in: a
/// process sends to a collector beside it (an agent, a sidecar, the node's) that holds the
/// backend's certificates and keys.
fn checked_endpoint(setting: &'static str, endpoint: String) -> Result<String, SettingError> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| refuse(setting, format!("'{endpoint}' is not a URL")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(refuse(
                setting,
                "https is not supported: letsgo sends spans in plain HTTP or gRPC to a \
                 collector beside it, which forwards them to a backend over TLS",
            ));
        }
        _ => {
            return Err(refuse(
                setting,
                format!("'{endpoint}' is not an http:// URL (e.g. http://127.0.0.1:4318)"),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse(setting, format!("'{endpoint}' names no host")));
    }
    Ok(endpoint)
}

/// `key=value,key2=value2`, values percent-encoded, as the headers and the resource
/// attributes are written. Errors name the entry's position, never its value (a header may be
/// a secret).
fn parse_pairs(setting: &'static str, text: &str) -> Result<Vec<(String, String)>, SettingError> {
    let mut pairs = Vec::new();
    for (index, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let position = index + 1;
        let Some((key, value)) = entry.split_once('=') else {
            return Err(refuse(
                setting,
                format!("entry {position} is not key=value"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(refuse(setting, format!("entry {position} has no key")));
        }
        let value = percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| {
                refuse(
                    setting,
                    format!("the value of entry {position} ('{key}') is not percent-encoded UTF-8"),
                )
            })?
            .into_owned();
        if setting != RESOURCE_ATTRIBUTES {
            let valid_name = http::HeaderName::from_bytes(key.as_bytes()).is_ok();
            let valid_value = http::HeaderValue::from_str(&value).is_ok();
            if !valid_name || !valid_value {
                return Err(refuse(
                    setting,
                    format!("entry {position} ('{key}') is not a valid HTTP header"),
                ));
            }
        }
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// The samplers the SDK builds from `OTEL_TRACES_SAMPLER`; anything else it would replace by
/// its default without a word.
fn check_sampler(sampler: Option<&str>, argument: Option<&str>) -> Result<(), SettingError> {
    let takes_ratio = match sampler {
        None => false,
        Some("always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off") => {
            false
        }
        Some("traceidratio" | "parentbased_traceidratio") => true,
        Some(other) => {
            return Err(refuse(
                SAMPLER,
                format!(
                    "'{other}' is not supported: always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ),
            ));
        }
    };
    if let (true, Some(argument)) = (takes_ratio, argument) {
        match argument.parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => {}
            _ => {
                return Err(refuse(
                    SAMPLER_ARG,
                    format!("'{argument}' is not a ratio from 0 to 1"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, SettingError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        OtlpSettings::from_vars(|name| vars.get(name).cloned())
    }

    fn on(vars: &[(&str, &str)]) -> OtlpSettings {
        settings(vars).expect("valid settings").expect("tracing on")
    }

    fn refused(vars: &[(&str, &str)]) -> SettingError {
        settings(vars).expect_err("refused")
    }

    #[test]
    fn without_an_endpoint_or_an_exporter_tracing_is_off() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[(ENDPOINT, "  ")]), Ok(None));
        assert_eq!(
            settings(&[("OTEL_SERVICE_NAME", "x"), (SAMPLER, "always_on")]),
            Ok(None),
            "a sampler or a name alone exports nothing"
        );
        assert_eq!(
            settings(&[(ENDPOINT, "http://collector:4318"), (SDK_DISABLED, "TRUE")]),
            Ok(None)
        );
        assert_eq!(
            settings(&[
                (ENDPOINT, "http://collector:4318"),
                (TRACES_EXPORTER, "none")
            ]),
            Ok(None)
        );
    }

    #[test]
    fn http_protobuf_is_the_default_and_the_path_goes_on_the_general_endpoint_only() {
        let general = on(&[(ENDPOINT, "http://collector:4318")]);
        assert_eq!(general.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(general.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            on(&[(ENDPOINT, "http://collector:4318/base/")]).endpoint,
            "http://collector:4318/base/v1/traces"
        );
        assert_eq!(
            on(&[
                (ENDPOINT, "http://collector:4318"),
                (TRACES_ENDPOINT, "http://traces:9999/custom")
            ])
            .endpoint,
            "http://traces:9999/custom",
            "the signal's own endpoint is used as written, and wins"
        );
        let grpc = on(&[(ENDPOINT, "http://collector:4317"), (PROTOCOL, "grpc")]);
        assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
        assert_eq!(grpc.endpoint, "http://collector:4317");
        assert_eq!(
            on(&[
                (ENDPOINT, "http://collector:4317"),
                (PROTOCOL, "grpc"),
                (TRACES_PROTOCOL, "http/protobuf")
            ])
            .protocol,
            OtlpProtocol::HttpProtobuf,
            "the signal's protocol wins"
        );
        assert_eq!(
            on(&[(TRACES_EXPORTER, "otlp")]).endpoint,
            "http://localhost:4318/v1/traces",
            "an exporter asked for by name sends to the specification's default"
        );
        assert_eq!(
            on(&[(TRACES_EXPORTER, "otlp"), (PROTOCOL, "grpc")]).endpoint,
            "http://localhost:4317"
        );
    }

    #[test]
    fn headers_are_percent_decoded_pairs() {
        let settings = on(&[
            (ENDPOINT, "http://collector:4318"),
            (HEADERS, "authorization=Bearer%20abc, x-tenant = shop-1 ,"),
        ]);
        assert_eq!(
            settings.headers,
            vec![
                ("authorization".to_owned(), "Bearer abc".to_owned()),
                ("x-tenant".to_owned(), "shop-1".to_owned())
            ]
        );
        let signal = on(&[
            (ENDPOINT, "http://collector:4318"),
            (HEADERS, "a=1"),
            (TRACES_HEADERS, "b=2"),
        ]);
        assert_eq!(signal.headers, vec![("b".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn values_that_cannot_be_honoured_stop_the_binary_naming_the_variable() {
        let endpoint = (ENDPOINT, "http://collector:4318");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[endpoint, (PROTOCOL, "http/json")], PROTOCOL),
            (&[endpoint, (TRACES_PROTOCOL, "thrift")], TRACES_PROTOCOL),
            (&[endpoint, (TRACES_EXPORTER, "zipkin")], TRACES_EXPORTER),
            (
                &[endpoint, (TRACES_EXPORTER, "otlp,console")],
                TRACES_EXPORTER,
            ),
            (&[endpoint, (SDK_DISABLED, "maybe")], SDK_DISABLED),
            (&[(ENDPOINT, "collector:4318")], ENDPOINT),
            (&[(ENDPOINT, "https://api.example.com")], ENDPOINT),
            (&[(TRACES_ENDPOINT, "not a url")], TRACES_ENDPOINT),
            (&[endpoint, (HEADERS, "authorization")], HEADERS),
            (&[endpoint, (TRACES_HEADERS, "bad name=x")], TRACES_HEADERS),
            (
                &[endpoint, (RESOURCE_ATTRIBUTES, "region")],
                RESOURCE_ATTRIBUTES,
            ),
            (&[endpoint, (COMPRESSION, "gzip")], COMPRESSION),
            (&[endpoint, (SAMPLER, "jaeger_remote")], SAMPLER),
            (
                &[endpoint, (SAMPLER, "traceidratio"), (SAMPLER_ARG, "2")],
                SAMPLER_ARG,
            ),
        ];
        for (vars, setting) in cases {
            let error = refused(vars);
            assert_eq!(error.setting, *setting, "{vars:?}: {error}");
            assert!(error.to_string().starts_with(setting), "{error}");
        }
        let secret = refused(&[endpoint, (HEADERS, "api-key=s3cret,broken")]);
        assert!(
            !secret.to_string().contains("s3cret"),
            "a header's value is never echoed: {secret}"
        );
    }
}
