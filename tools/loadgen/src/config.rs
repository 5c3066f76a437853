//! The command line: `letsgo-loadgen [load options]`, or `letsgo-loadgen hello`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::mix::{Action, Mix};

/// Load generator for the letsgo gateway: realistic shoppers (browse, search, product detail,
/// cart, checkout and payment) in configurable proportions, closed loop (a fixed number of
/// connections) or open loop (a fixed rate), with latency percentiles and error counts per
/// operation. It creates its own admin session, products and shoppers, so it works on a fresh
/// shop; run the shop with its rate limits raised.
#[derive(Debug, Parser)]
#[command(
    name = "letsgo-loadgen",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Threads: the bare server's runtime workers, or the lanes a load runs on (one
    /// single-threaded runtime each, the connections dealt round them). Default: one per core.
    #[arg(long, global = true, env = "LOADGEN_THREADS")]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A flash sale: BUYERS, each with an account of their own, order one unit of one new
    /// product with UNITS in stock at the same moment, while ordinary shoppers read other
    /// products. Reports decisions per second and their latency, units sold (exactly UNITS when
    /// demand exceeds them), time to sell out, errors, and the readers' latency before and
    /// during the sale. Exits non-zero if an error, an oversale or a refusal while units were
    /// left happened.
    FlashSale(FlashSaleArgs),
    /// A bare HTTP/1.1 server answering a fixed small JSON body: the machine's HTTP ceiling.
    Hello {
        /// Address to listen on; port 0 picks a free one (printed on stdout).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// The shop the load goes to, and its admin, who makes the products the load shops from.
#[derive(Debug, Args)]
pub struct ShopArgs {
    /// The gateway's base URL (plain HTTP).
    #[arg(
        long,
        env = "LOADGEN_TARGET_URL",
        default_value = "http://127.0.0.1:8888"
    )]
    pub target_url: String,

    /// The shop's admin (ADMIN_USERNAME of the user service), who makes the products.
    #[arg(long, env = "ADMIN_USERNAME", default_value = "admin")]
    pub admin_user: String,

    /// The admin's password (ADMIN_PASSWORD of the user service; `make up` keeps it in
    /// /tmp/letsgo/admin-password). Needed to make products, so not for `--raw`.
    #[arg(
        long,
        env = "ADMIN_PASSWORD",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub admin_password: String,
}

#[derive(Debug, Args)]
pub struct FlashSaleArgs {
    #[command(flatten)]
    pub shop: ShopArgs,

    /// Buyers, each registered for this sale (registration hashes a password: thousands take
    /// a minute or more).
    #[arg(long, default_value_t = 2000, value_parser = buyers)]
    pub buyers: usize,

    /// Orders each buyer places, one after another (the buyers of a connection take turns):
    /// more than 1 makes a longer sale from the same registrations, for a steadier measure of
    /// order creation than a sale over in a second or two.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub orders_each: u32,

    /// Units of the product on sale.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub units: i64,

    /// The buyers' connections; the buyers are dealt round them and each connection orders
    /// for its buyers one after another.
    #[arg(long, short = 'c', default_value_t = 64, value_parser = connections)]
    pub connections: usize,

    /// The ordinary shoppers' product reads per second (an open loop). A sale of 2,000 buyers is
    /// decided in a fraction of a second, so at 100 reads a second its window held 16-65 reads,
    /// too few for a p99; at 1,000 it holds a few hundred.
    #[arg(long, default_value_t = 1000.0, value_parser = positive)]
    pub read_rate: f64,

    /// The ordinary shoppers' connections.
    #[arg(long, default_value_t = 8, value_parser = connections)]
    pub readers: usize,

    /// How long the ordinary shoppers read before the sale starts (their figures without it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub baseline: Duration,

    /// A request without an answer after this long is a timeout error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub shop: ShopArgs,

    /// Relative weights of browse, search, detail, cart and checkout (order and payment).
    #[arg(
        long,
        default_value = "browse=50,search=15,detail=20,cart=10,checkout=5",
        conflicts_with = "only"
    )]
    pub mix: Mix,

    /// A single action instead of a mix (same as --mix ACTION=100).
    #[arg(long, value_name = "ACTION")]
    pub only: Option<Action>,

    /// Product detail always asks for the same product (one cached entry).
    #[arg(long)]
    pub fixed_product: bool,

    /// Connections, one worker each. Closed loop: how many requests are in flight;
    /// open loop (--rate): the most that may be.
    #[arg(long, short = 'c', default_value_t = 64, value_parser = connections)]
    pub connections: usize,

    /// Open loop: start this many operations per second whatever the answers' pace, and count
    /// latency from when each was meant to start.
    #[arg(long, value_parser = positive)]
    pub rate: Option<f64>,

    /// How long to measure, after the warm-up (e.g. 30s, 2m, 500ms).
    #[arg(long, short = 'd', default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load sent before measuring, not counted.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// A request without an answer after this long is a timeout error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Products this tool creates (or reuses from an earlier run) to shop from.
    #[arg(long, default_value_t = 20)]
    pub products: usize,

    /// Shoppers to register when the mix has cart or checkout (default: one per connection).
    #[arg(long)]
    pub users: Option<usize>,

    /// Hammer one URL instead of shopping: `--raw GET http://127.0.0.1:PORT/`. Any 2xx succeeds.
    #[arg(long, num_args = 2, value_names = ["METHOD", "URL"])]
    pub raw: Option<Vec<String>>,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl LoadArgs {
    pub fn mix(&self) -> Mix {
        match self.only {
            Some(action) => Mix::only(action),
            None => self.mix.clone(),
        }
    }
}

fn connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a number of connections (1 to 10000)")),
    }
}

fn buyers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a number of buyers (1 to 100000)")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// `30s`, `2m`, `500ms`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 30s, 2m, 500ms)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_or_without_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn only_overrides_the_default_mix() {
        let cli =
            Cli::try_parse_from(["letsgo-loadgen", "--only", "detail", "--fixed-product"]).unwrap();
        assert_eq!(cli.load.mix(), Mix::only(Action::Detail));
        assert!(cli.load.fixed_product);
        assert!(
            Cli::try_parse_from(["letsgo-loadgen", "--only", "detail", "--mix", "browse=1"])
                .is_err()
        );
        let cli =
            Cli::try_parse_from(["letsgo-loadgen", "--raw", "GET", "http://127.0.0.1:1/"]).unwrap();
        assert_eq!(cli.load.raw.unwrap(), ["GET", "http://127.0.0.1:1/"]);
        let cli =
            Cli::try_parse_from(["letsgo-loadgen", "hello", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Hello { .. })));
    }
}
