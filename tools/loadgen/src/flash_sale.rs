//! The flash sale: many buyers, each signed in with an account of their own, ask for one unit of
//! one product at the same moment, while ordinary shoppers go on reading other products.
//!
//! A decision is an order accepted or refused as sold out (409 with 3001); anything else is an
//! error. What it checks besides speed: exactly the units on sale were sold when demand exceeds
//! them (never more), no buyer was refused while a unit stayed free, and the ordinary shoppers'
//! reads during the sale next to the same reads before it. The ordinary reads run in an open
//! loop (latency from each read's intended start), so a stalled shop shows in their figures
//! instead of slowing the readers down with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::sleep_until;

use crate::config::FlashSaleArgs;
use crate::http::{Call, Connection, Target};
use crate::shop::{NewProduct, data, ensure_products, register_shoppers, sign_in_admin};

/// Marks the products this scenario makes (never reused: each sale has a product of its own).
const MARKER: &str = "lgflash";

/// What a sale measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlashSaleReport {
    pub buyers: usize,
    /// Orders each buyer placed.
    pub orders_each: u32,
    pub units: i64,
    pub connections: usize,
    pub product_id: i64,
    /// Orders accepted plus orders refused as sold out.
    pub decisions: u64,
    pub accepted: u64,
    pub refused_sold_out: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Decisions per second, from the common start to the last decision.
    pub decisions_per_sec: f64,
    pub decision_ms: Latency,
    /// From the start to the answer that accepted the last unit; none if some are left.
    pub sold_out_after_secs: Option<f64>,
    /// The product's stock read back after the sale.
    pub stock_left: i64,
    /// More accepted than there were units, or the stock and the accepted orders disagree.
    pub oversold: bool,
    /// A buyer was refused as sold out while units were left at the end.
    pub refused_while_units_left: bool,
    pub readers: Readers,
}

/// The ordinary shoppers' product reads, before the sale and during it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readers {
    pub rate_per_sec: f64,
    pub before: ReadFigures,
    pub during: ReadFigures,
}

/// The fewest reads whose p99 is not simply their slowest: below 100, the 99th percentile of a
/// window's reads is its maximum.
pub const READS_FOR_A_P99: u64 = 100;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFigures {
    pub reads: u64,
    pub errors: u64,
    pub latency_ms: Option<Latency>,
    /// At least [`READS_FOR_A_P99`] reads: the p99 is not simply the slowest one.
    pub enough_for_p99: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        (!histogram.is_empty()).then(|| Latency {
            p50: histogram.value_at_quantile(0.50) as f64 / 1000.0,
            p99: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            max: histogram.max() as f64 / 1000.0,
        })
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One buyer's answer.
enum Decision {
    Accepted,
    SoldOut,
    Error(String),
}

fn decide(result: Result<Value, String>) -> Decision {
    match result {
        Ok(_) => Decision::Accepted,
        Err(label) if label == "409/3001" => Decision::SoldOut,
        Err(label) => Decision::Error(label),
    }
}

/// What one buyers' connection saw.
struct BuyerLane {
    latency: Histogram<u64>,
    accepted: u64,
    refused: u64,
    errors: BTreeMap<String, u64>,
    last_decision: Option<Instant>,
    last_accept: Option<Instant>,
}

/// What one reader saw: each read's intended start, latency and success.
type ReadLog = Vec<(Instant, Duration, bool)>;

pub async fn run(args: FlashSaleArgs) -> Result<FlashSaleReport, String> {
    let (target, _) = Target::parse(&args.shop.target_url)?;
    let mut setup = Connection::new(target.clone(), args.timeout);
    let admin = sign_in_admin(&mut setup, &args.shop.admin_user, &args.shop.admin_password).await?;
    let shelves = ensure_products(&mut setup, &admin, 20).await?;
    let product_id = add_sale_product(&mut setup, &admin, args.units).await?;
    eprintln!(
        "flash sale: product {product_id} with {} units; registering {} buyers (each hashes a password: this takes a while)",
        args.units, args.buyers
    );
    let registering = Instant::now();
    let tokens = register_shoppers(&setup, args.buyers).await?;
    eprintln!(
        "flash sale: {} buyers registered in {:.1} s",
        tokens.len(),
        registering.elapsed().as_secs_f64()
    );

    // The buyers' connections, open before the start so that the start is the same for all.
    let mut lanes: Vec<(Connection, Vec<String>)> = (0..args.connections)
        .map(|_| (setup.fresh(), Vec::new()))
        .collect();
    for (i, token) in tokens.into_iter().enumerate() {
        lanes[i % args.connections].1.push(token);
    }
    for (conn, _) in &mut lanes {
        conn.send(Call::get("/health"))
            .await
            .map_err(|f| format!("opening a buyer's connection: {}", f.label()))?;
    }

    // The ordinary shoppers start first; the sale starts after their baseline.
    let readers_began = Instant::now() + Duration::from_millis(100);
    let sale_start = readers_began + args.baseline;
    let stop_reading = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(args.readers as f64 / args.read_rate);
    for reader in 0..args.readers {
        let mut conn = setup.fresh();
        let shelves = shelves.clone();
        let stop = stop_reading.clone();
        let first = readers_began + interval.mul_f64(reader as f64 / args.readers as f64);
        readers.spawn(async move {
            let mut log = ReadLog::new();
            let mut rng = fastrand::Rng::new();
            for k in 0u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let intended = first + interval * k;
                sleep_until(intended.into()).await;
                let path = format!(
                    "/api/v1/product/detail/{}",
                    shelves[rng.usize(..shelves.len())]
                );
                let ok = data::<Value>(conn.send(Call::get(&path)).await).is_ok();
                log.push((intended, intended.elapsed(), ok));
            }
            log
        });
    }

    eprintln!(
        "flash sale: ordinary shoppers reading {} products a second; the sale starts in {:.0} s",
        args.read_rate,
        args.baseline.as_secs_f64()
    );
    let mut buyers = tokio::task::JoinSet::new();
    let orders_each = args.orders_each as usize;
    for (mut conn, tokens) in lanes {
        buyers.spawn(async move {
            let mut lane = BuyerLane {
                latency: histogram(),
                accepted: 0,
                refused: 0,
                errors: BTreeMap::new(),
                last_decision: None,
                last_accept: None,
            };
            sleep_until(sale_start.into()).await;
            for token in tokens.iter().cycle().take(tokens.len() * orders_each) {
                let body = json!({
                    "items": [{"productId": product_id, "quantity": 1}],
                    "address": "12 Harbour Road, Pudong, Shanghai",
                    "phone": "13800138000",
                    "remark": "flash sale",
                });
                let began = Instant::now();
                let result = data::<Value>(
                    conn.send(
                        Call::with_json(Method::POST, "/api/v1/order/create", &body)
                            .token(Some(token)),
                    )
                    .await,
                );
                let ended = Instant::now();
                match decide(result) {
                    Decision::Accepted => {
                        lane.accepted += 1;
                        lane.last_accept = Some(ended);
                    }
                    Decision::SoldOut => lane.refused += 1,
                    Decision::Error(label) => {
                        *lane.errors.entry(label).or_default() += 1;
                        continue;
                    }
                }
                lane.latency
                    .saturating_record(micros(ended.duration_since(began)));
                lane.last_decision = Some(ended);
            }
            lane
        });
    }
    let mut lanes = Vec::new();
    while let Some(lane) = buyers.join_next().await {
        lanes.push(lane.map_err(|e| format!("a buyer's connection failed: {e}"))?);
    }
    let sale_end = Instant::now();
    stop_reading.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    while let Some(log) = readers.join_next().await {
        logs.push(log.map_err(|e| format!("a reader failed: {e}"))?);
    }

    let stock_left = stock_of(&mut setup, product_id).await?;
    Ok(summarise(
        &args,
        product_id,
        lanes,
        &logs,
        (sale_start, sale_end),
        stock_left,
    ))
}

fn summarise(
    args: &FlashSaleArgs,
    product_id: i64,
    lanes: Vec<BuyerLane>,
    logs: &[ReadLog],
    (sale_start, sale_end): (Instant, Instant),
    stock_left: i64,
) -> FlashSaleReport {
    let mut latency = histogram();
    let (mut accepted, mut refused) = (0, 0);
    let mut errors_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let (mut last_decision, mut last_accept) = (None, None);
    for lane in lanes {
        latency.add(&lane.latency).expect("same bounds");
        accepted += lane.accepted;
        refused += lane.refused;
        for (label, n) in lane.errors {
            *errors_by_kind.entry(label).or_default() += n;
        }
        last_decision = last_decision.max(lane.last_decision);
        last_accept = last_accept.max(lane.last_accept);
    }
    let decisions = accepted + refused;
    let took = last_decision
        .map(|t| t.duration_since(sale_start).as_secs_f64())
        .unwrap_or(0.0)
        .max(f64::MIN_POSITIVE);
    let sold_out = stock_left == 0;
    let units = args.units;
    let read_figures = |from: Instant, until: Instant| {
        let mut figures = ReadFigures::default();
        let mut histogram = histogram();
        for &(intended, took, ok) in logs.iter().flatten() {
            if intended < from || intended >= until {
                continue;
            }
            figures.reads += 1;
            if ok {
                histogram.saturating_record(micros(took));
            } else {
                figures.errors += 1;
            }
        }
        figures.latency_ms = Latency::of(&histogram);
        figures.enough_for_p99 = figures.reads >= READS_FOR_A_P99;
        figures
    };
    let earliest = logs
        .iter()
        .flatten()
        .map(|(intended, _, _)| *intended)
        .min()
        .unwrap_or(sale_start);
    FlashSaleReport {
        buyers: args.buyers,
        orders_each: args.orders_each,
        units,
        connections: args.connections,
        product_id,
        decisions,
        accepted,
        refused_sold_out: refused,
        errors: errors_by_kind.values().sum(),
        errors_by_kind,
        decisions_per_sec: (decisions as f64 / took * 100.0).round() / 100.0,
        decision_ms: Latency::of(&latency).unwrap_or(Latency {
            p50: 0.0,
            p99: 0.0,
            max: 0.0,
        }),
        sold_out_after_secs: last_accept
            .filter(|_| sold_out)
            .map(|t| (t.duration_since(sale_start).as_secs_f64() * 1000.0).round() / 1000.0),
        stock_left,
        oversold: accepted as i64 > units || units - accepted as i64 != stock_left,
        refused_while_units_left: refused > 0 && stock_left > 0,
        readers: Readers {
            rate_per_sec: args.read_rate,
            before: read_figures(earliest, sale_start),
            during: read_figures(sale_start, sale_end),
        },
    }
}

async fn add_sale_product(conn: &mut Connection, token: &str, units: i64) -> Result<i64, String> {
    let run = fastrand::u32(..) & 0xff_ffff;
    let body = json!({
        "name": format!("Flash Sale Kettle {run:06x}"),
        "description": format!("A copper kettle sold in a flash sale ({MARKER} {run:06x})"),
        "price": 99.0,
        "stock": units,
        "category": "kitchen",
        "images": [format!("https://img.example.com/{MARKER}/{run:06x}.jpg")],
        "attributes": r#"{"colour":"copper"}"#,
    });
    let created: NewProduct = data(
        conn.send(Call::with_json(Method::POST, "/api/v1/product/add", &body).token(Some(token)))
            .await,
    )
    .map_err(|e| format!("adding the sale's product: {e}"))?;
    Ok(created.product_id)
}

async fn stock_of(conn: &mut Connection, product_id: i64) -> Result<i64, String> {
    #[derive(Deserialize)]
    struct Detail {
        product: Stock,
    }
    #[derive(Deserialize)]
    struct Stock {
        stock: i64,
    }
    let path = format!("/api/v1/product/detail/{product_id}");
    let detail: Detail = data(conn.send(Call::get(&path)).await)
        .map_err(|e| format!("reading the sale's product back: {e}"))?;
    Ok(detail.product.stock)
}

impl FlashSaleReport {
    /// Whether the sale kept the shop's promises: no error, nothing oversold, nobody refused
    /// while a unit was left.
    pub fn held(&self) -> bool {
        self.errors == 0 && !self.oversold && !self.refused_while_units_left
    }

    pub fn to_table(&self) -> String {
        let ms = |l: Option<Latency>| {
            l.map_or("-".to_owned(), |l| {
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    l.p50, l.p99, l.max
                )
            })
        };
        let mut out = String::new();
        let each = match self.orders_each {
            1 => String::new(),
            n => format!(", {n} orders each"),
        };
        out.push_str(&format!(
            "flash sale: {} buyers{each} on {} units of product {} over {} connections\n",
            self.buyers, self.units, self.product_id, self.connections
        ));
        out.push_str(&format!(
            "decisions      {} ({} accepted, {} refused as sold out), {:.0}/s\n",
            self.decisions, self.accepted, self.refused_sold_out, self.decisions_per_sec
        ));
        out.push_str(&format!("decision       {}\n", ms(Some(self.decision_ms))));
        out.push_str(&format!(
            "sold out after {}\n",
            self.sold_out_after_secs
                .map_or("(not sold out)".to_owned(), |s| format!("{s:.2} s"))
        ));
        out.push_str(&format!(
            "stock left     {}; oversold: {}; refused while units were left: {}\n",
            self.stock_left,
            if self.oversold { "YES" } else { "no" },
            if self.refused_while_units_left {
                "YES"
            } else {
                "no"
            }
        ));
        out.push_str(&format!("errors         {}", self.errors));
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            out.push_str(&format!(" ({})", kinds.join(", ")));
        }
        out.push('\n');
        for (when, figures) in [
            ("before", &self.readers.before),
            ("during", &self.readers.during),
        ] {
            let few = if !figures.enough_for_p99 {
                " (too few reads for a p99: it is their slowest; raise --read-rate)"
            } else {
                ""
            };
            out.push_str(&format!(
                "readers {when}: {} reads at {}/s, {} errors, {}{few}\n",
                figures.reads,
                self.readers.rate_per_sec,
                figures.errors,
                ms(figures.latency_ms)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(buyers: usize, units: i64) -> FlashSaleArgs {
        use clap::Parser;
        let cli = crate::config::Cli::try_parse_from([
            "letsgo-loadgen",
            "flash-sale",
            "--buyers",
            &buyers.to_string(),
            "--units",
            &units.to_string(),
        ])
        .unwrap();
        match cli.command {
            Some(crate::config::Command::FlashSale(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    fn lane(accepted: u64, refused: u64, at: Instant) -> BuyerLane {
        let mut latency = histogram();
        for _ in 0..accepted + refused {
            latency.saturating_record(2000);
        }
        BuyerLane {
            latency,
            accepted,
            refused,
            errors: BTreeMap::new(),
            last_decision: Some(at),
            last_accept: (accepted > 0).then_some(at),
        }
    }

    #[test]
    fn a_sale_that_sold_exactly_its_units_held() {
        let start = Instant::now();
        let lanes = vec![
            lane(6, 40, start + Duration::from_millis(500)),
            lane(4, 50, start + Duration::from_millis(1000)),
        ];
        let report = summarise(
            &args(100, 10),
            1,
            lanes,
            &[],
            (start, start + Duration::from_secs(1)),
            0,
        );
        assert_eq!((report.decisions, report.accepted), (100, 10));
        assert_eq!(report.decisions_per_sec, 100.0);
        assert_eq!(report.sold_out_after_secs, Some(1.0));
        assert!(report.held(), "{}", report.to_table());
    }

    #[test]
    fn oversold_stock_and_refusals_while_units_were_left_are_caught() {
        let start = Instant::now();
        let at = start + Duration::from_millis(100);
        let oversold = summarise(&args(20, 10), 1, vec![lane(11, 9, at)], &[], (start, at), 0);
        assert!(oversold.oversold && !oversold.held());
        // The stock and the accepted orders disagree: a unit was taken without an order.
        let lost = summarise(&args(20, 10), 1, vec![lane(9, 11, at)], &[], (start, at), 0);
        assert!(lost.oversold);
        let refused_early = summarise(&args(20, 10), 1, vec![lane(9, 11, at)], &[], (start, at), 1);
        assert!(refused_early.refused_while_units_left && !refused_early.held());
        assert_eq!(refused_early.sold_out_after_secs, None);
    }

    #[test]
    fn reads_are_split_at_the_sales_start() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(10);
        let ms = Duration::from_millis;
        let logs = vec![vec![
            (t0, ms(2), true),
            (t0 + ms(5000), ms(4), true),
            (start + ms(10), ms(30), true),
            (start + ms(20), ms(50), false),
        ]];
        let report = summarise(
            &args(1, 1),
            1,
            Vec::new(),
            &logs,
            (start, start + Duration::from_secs(1)),
            1,
        );
        assert_eq!(report.readers.before.reads, 2);
        assert_eq!(report.readers.during.reads, 2);
        assert_eq!(report.readers.during.errors, 1);
        assert!((report.readers.during.latency_ms.unwrap().p99 - 30.0).abs() < 0.1);
    }

    #[test]
    fn a_window_with_too_few_reads_for_a_p99_says_so() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(10);
        let ms = Duration::from_millis;
        let mut log: Vec<(Instant, Duration, bool)> = (0..READS_FOR_A_P99 as u32)
            .map(|k| (t0 + ms(k.into()), ms(2), true))
            .collect();
        log.extend((0..READS_FOR_A_P99 as u32 - 1).map(|k| (start + ms(k.into()), ms(3), true)));
        let report = summarise(
            &args(1, 1),
            1,
            Vec::new(),
            &[log],
            (start, start + Duration::from_secs(1)),
            1,
        );
        let table = report.to_table();
        let line = |when: &str| {
            table
                .lines()
                .find(|line| line.starts_with(&format!("readers {when}:")))
                .unwrap()
                .to_owned()
        };
        assert!(report.readers.before.enough_for_p99 && !report.readers.during.enough_for_p99);
        assert!(!line("before").contains("too few"), "{table}");
        assert!(
            line("during").contains("too few reads for a p99"),
            "{table}"
        );
    }
}
