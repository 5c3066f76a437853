//! Latencies and errors per operation: recorded per worker without sharing, merged at the end
//! into a report printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What a latency and an outcome are recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Browse,
    Search,
    Detail,
    CartAdd,
    CartClear,
    OrderCreate,
    PaymentCreate,
    /// Order and payment together, from the first request's (intended) start to the last's end.
    Checkout,
    /// An admin's stock top-up after an order found a product sold out.
    Restock,
    /// `--raw`: one URL, any 2xx is a success.
    Raw,
}

impl Operation {
    pub const COUNT: usize = 10;
    pub const ALL: [Operation; Operation::COUNT] = [
        Operation::Browse,
        Operation::Search,
        Operation::Detail,
        Operation::CartAdd,
        Operation::CartClear,
        Operation::OrderCreate,
        Operation::PaymentCreate,
        Operation::Checkout,
        Operation::Restock,
        Operation::Raw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Browse => "browse",
            Operation::Search => "search",
            Operation::Detail => "detail",
            Operation::CartAdd => "cart_add",
            Operation::CartClear => "cart_clear",
            Operation::OrderCreate => "order_create",
            Operation::PaymentCreate => "payment_create",
            Operation::Checkout => "checkout",
            Operation::Restock => "restock",
            Operation::Raw => "raw",
        }
    }

    /// A composite spans several requests, which are also recorded on their own: it is left
    /// out of the request totals.
    pub fn is_composite(self) -> bool {
        self == Operation::Checkout
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Latencies are kept in microseconds, from 1 µs to 2 minutes (longer ones saturate), to 3
/// significant digits: about 150 KiB a histogram, so they are made on first use.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// The window whose samples count: after the warm-up, before the end.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub until: Instant,
    /// Open loop: a request counts by its intended start alone, however late it finishes, so
    /// that a stalled server's backlog shows in the latencies instead of vanishing.
    pub open_loop: bool,
}

impl Window {
    fn counts(&self, began: Instant, ended: Instant) -> bool {
        began >= self.from && began < self.until && (self.open_loop || ended <= self.until)
    }
}

/// Running totals for the progress line, read once a second. Each worker counts into a slot of
/// its own, on a cache line of its own, and the line sums the slots: an answer shows in the
/// second it came, and no line bounces between the cores per request. (Workers once gathered 64
/// answers before adding them to shared counters: at 300 requests a second over 64 workers
/// the line then read `0 ok/s` for half the seconds and bursts in multiples of 64 in others.)
#[derive(Debug, Default)]
pub struct Progress {
    workers: Mutex<Vec<Arc<WorkerCounts>>>,
}

/// Progress totals: successes, errors, and the successes' summed latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressTotals {
    pub ok: u64,
    pub errors: u64,
    pub latency_us: u64,
}

impl Progress {
    /// A new worker's slot.
    fn slot(&self) -> Arc<WorkerCounts> {
        let counts = Arc::new(WorkerCounts::default());
        self.workers
            .lock()
            .expect("progress lock")
            .push(counts.clone());
        counts
    }

    /// Every worker's answers so far.
    pub fn totals(&self) -> ProgressTotals {
        let workers = self.workers.lock().expect("progress lock");
        let mut totals = ProgressTotals::default();
        for counts in workers.iter() {
            totals.ok += counts.ok.load(Ordering::Relaxed);
            totals.errors += counts.errors.load(Ordering::Relaxed);
            totals.latency_us += counts.latency_us.load(Ordering::Relaxed);
        }
        totals
    }
}

/// One worker's progress counts, written by that worker alone.
#[derive(Debug, Default)]
#[repr(align(128))]
struct WorkerCounts {
    ok: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
}

/// Adds to a counter only its worker writes: a plain load and store, no locked instruction.
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// One worker's samples.
pub struct Recorder {
    window: Window,
    /// When the last counted answer came (open loop: possibly after the window).
    last_end: Option<Instant>,
    progress: Arc<WorkerCounts>,
    tallies: Vec<Option<Tally>>,
}

struct Tally {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn new(window: Window, progress: Arc<Progress>) -> Recorder {
        Recorder {
            window,
            last_end: None,
            progress: progress.slot(),
            tallies: (0..Operation::COUNT).map(|_| None).collect(),
        }
    }

    /// Records one outcome: a success's latency, or an error under its label
    /// (`"409/3001"`: HTTP status and envelope code; `"timeout"`, ...).
    pub fn record(
        &mut self,
        operation: Operation,
        began: Instant,
        ended: Instant,
        outcome: Result<(), String>,
    ) {
        let micros = micros(ended.saturating_duration_since(began));
        if !operation.is_composite() {
            match outcome {
                Ok(()) => {
                    add(&self.progress.ok, 1);
                    add(&self.progress.latency_us, micros);
                }
                Err(_) => add(&self.progress.errors, 1),
            }
        }
        if !self.window.counts(began, ended) {
            return;
        }
        self.last_end = self.last_end.max(Some(ended));
        let tally = self.tallies[operation.index()].get_or_insert_with(Tally::new);
        match outcome {
            Ok(()) => tally.latency.saturating_record(micros.max(1)),
            Err(label) => *tally.errors.entry(label).or_default() += 1,
        }
    }

    /// Takes `other`'s samples in (the progress line has seen both workers' answers already).
    pub fn merge(&mut self, other: Recorder) {
        self.last_end = self.last_end.max(other.last_end);
        for (mine, theirs) in self.tallies.iter_mut().zip(other.tallies) {
            let Some(theirs) = theirs else { continue };
            let mine = mine.get_or_insert_with(Tally::new);
            mine.latency
                .add(&theirs.latency)
                .expect("histograms with the same bounds add up");
            for (label, n) in theirs.errors {
                *mine.errors.entry(label).or_default() += n;
            }
        }
    }

    /// The report; operations never attempted are left out. Rates are over the window, or, in
    /// an open loop whose answers came in after it, until the last answer.
    pub fn report(&self, settings: Settings) -> Report {
        let mut until = self.window.until;
        if self.window.open_loop {
            until = until.max(self.last_end.unwrap_or(until));
        }
        let seconds = until
            .saturating_duration_since(self.window.from)
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
        let mut operations = Vec::new();
        let mut totals = Totals::default();
        for operation in Operation::ALL {
            let Some(tally) = &self.tallies[operation.index()] else {
                continue;
            };
            let ok = tally.latency.len();
            let errors: u64 = tally.errors.values().sum();
            if ok + errors == 0 {
                continue;
            }
            if !operation.is_composite() {
                totals.ok += ok;
                totals.errors += errors;
            }
            operations.push(OperationReport {
                name: operation.name(),
                ok,
                errors,
                errors_by_kind: tally.errors.clone(),
                throughput_per_sec: round2(ok as f64 / seconds),
                latency_ms: (ok > 0).then(|| Latency::of(&tally.latency)),
            });
        }
        totals.throughput_per_sec = round2(totals.ok as f64 / seconds);
        Report {
            settings,
            measured_secs: round2(seconds),
            totals,
            operations,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How the run was set up, repeated in the report so a JSON file stands on its own.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub target: String,
    /// `closed` (a fixed number of connections, each sending when the last answer came) or
    /// `open` (a fixed rate of intended starts, latency counted from them).
    pub model: &'static str,
    pub connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// Each action's share in percent (empty for `--raw`).
    pub mix: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    pub fixed_product: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub settings: Settings,
    pub measured_secs: f64,
    /// Requests (a checkout counts as its two requests).
    pub totals: Totals,
    pub operations: Vec<OperationReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub ok: u64,
    pub errors: u64,
    pub throughput_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationReport {
    pub name: &'static str,
    pub ok: u64,
    pub errors: u64,
    /// `"<HTTP status>/<envelope code>"`, `"<HTTP status>"` without an envelope, or
    /// `timeout` / `connect` / `transport`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successes per second.
    pub throughput_per_sec: f64,
    /// Of the successes; absent when there were none.
    pub latency_ms: Option<Latency>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: round3(h.mean() / 1000.0),
        }
    }
}

impl Report {
    /// The table printed at the end of a run.
    pub fn to_table(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let load = match s.rate_per_sec {
            Some(rate) => format!(
                "open loop at {rate} op/s, up to {} connections",
                s.connections
            ),
            None => format!("closed loop, {} connections", s.connections),
        };
        let what = match &s.raw {
            Some(raw) => format!("raw {raw}"),
            None => {
                let mix: Vec<String> = s.mix.iter().map(|(a, p)| format!("{a} {p:.0}%")).collect();
                let fixed = if s.fixed_product { ", one product" } else { "" };
                format!("{} ({}{fixed})", s.target, mix.join(", "))
            }
        };
        let _ = writeln!(out, "{what}");
        let _ = writeln!(
            out,
            "{load}; {:.1}s measured after {:.1}s warm-up",
            self.measured_secs, s.warmup_secs
        );
        let _ = writeln!(
            out,
            "{:<15} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "operation", "ok", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        for op in &self.operations {
            let lat = |f: fn(&Latency) -> f64| {
                op.latency_ms
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |l| format!("{:.2}", f(l)))
            };
            let _ = writeln!(
                out,
                "{:<15} {:>9} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>8}",
                op.name,
                op.ok,
                op.throughput_per_sec,
                lat(|l| l.p50),
                lat(|l| l.p90),
                lat(|l| l.p99),
                lat(|l| l.max),
                op.errors
            );
        }
        let _ = writeln!(
            out,
            "{:<15} {:>9} {:>10.1} {:>49}",
            "all requests", self.totals.ok, self.totals.throughput_per_sec, self.totals.errors
        );
        for op in self.operations.iter().filter(|o| o.errors > 0) {
            let kinds: Vec<String> = op
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            let _ = writeln!(out, "errors in {}: {}", op.name, kinds.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Histograms keep 3 significant digits: a value reads back within 0.1%.
    fn assert_near(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= expected * 0.001 + 0.001,
            "{actual} is not about {expected}"
        );
    }

    fn settings() -> Settings {
        Settings {
            target: "http://127.0.0.1:8888".to_owned(),
            model: "closed",
            connections: 2,
            rate_per_sec: None,
            warmup_secs: 1.0,
            duration_secs: 2.0,
            mix: BTreeMap::new(),
            raw: None,
            fixed_product: false,
        }
    }

    #[test]
    fn workers_samples_merge_into_one_report_per_operation() {
        let t0 = Instant::now();
        let window = Window {
            from: t0 + Duration::from_secs(1),
            until: t0 + Duration::from_secs(3),
            open_loop: false,
        };
        let progress = Arc::new(Progress::default());
        let ms = |n: u64| Duration::from_millis(n);
        let at = |n: u64| t0 + ms(n);

        let mut first = Recorder::new(window, progress.clone());
        // Warm-up: seen by the progress line, not by the report.
        first.record(Operation::Detail, at(500), at(510), Ok(()));
        first.record(Operation::Detail, at(1000), at(1002), Ok(()));
        first.record(Operation::Detail, at(1100), at(1104), Ok(()));
        first.record(
            Operation::Detail,
            at(1200),
            at(1300),
            Err("404/3000".into()),
        );
        let mut second = Recorder::new(window, progress.clone());
        second.record(Operation::Detail, at(2000), at(2006), Ok(()));
        second.record(
            Operation::Detail,
            at(2100),
            at(2200),
            Err("404/3000".into()),
        );
        second.record(Operation::Detail, at(2200), at(2300), Err("timeout".into()));
        // Finished after the end of a closed-loop run: not counted.
        second.record(Operation::Detail, at(2999), at(3001), Ok(()));
        second.record(Operation::OrderCreate, at(1500), at(1510), Ok(()));
        second.record(Operation::PaymentCreate, at(1510), at(1515), Ok(()));
        second.record(Operation::Checkout, at(1500), at(1515), Ok(()));

        first.merge(second);
        let report = first.report(settings());

        let names: Vec<&str> = report.operations.iter().map(|o| o.name).collect();
        assert_eq!(
            names,
            ["detail", "order_create", "payment_create", "checkout"]
        );
        let detail = &report.operations[0];
        assert_eq!((detail.ok, detail.errors), (3, 3));
        assert_eq!(detail.errors_by_kind["404/3000"], 2);
        assert_eq!(detail.errors_by_kind["timeout"], 1);
        assert_eq!(detail.throughput_per_sec, 1.5);
        let latency = detail.latency_ms.unwrap();
        assert_near(latency.p50, 4.0);
        assert_near(latency.max, 6.0);
        assert_near(latency.mean, 4.0);
        let checkout = &report.operations[3];
        assert_near(checkout.latency_ms.unwrap().max, 15.0);
        // The checkout's own requests are counted once, in their own operations.
        assert_eq!(report.totals.ok, 5);
        assert_eq!(report.totals.errors, 3);
        assert_eq!(report.totals.throughput_per_sec, 2.5);
        // The progress line saw every request, warm-up and late ones included.
        assert_eq!(progress.totals().ok, 7);
        assert_eq!(progress.totals().errors, 3);

        let json = serde_json::to_value(&report).unwrap();
        assert_near(
            json["operations"][0]["latencyMs"]["p99"].as_f64().unwrap(),
            6.0,
        );
        assert_eq!(json["operations"][0]["errorsByKind"]["timeout"], 1);
        assert!(
            report
                .to_table()
                .contains("errors in detail: 404/3000 x2, timeout x1")
        );
    }

    #[test]
    fn the_progress_line_sees_each_answer_in_the_second_it_came() {
        let t0 = Instant::now();
        let window = Window {
            from: t0,
            until: t0 + Duration::from_secs(10),
            open_loop: true,
        };
        let progress = Arc::new(Progress::default());
        let mut workers: Vec<Recorder> = (0..4)
            .map(|_| Recorder::new(window, progress.clone()))
            .collect();
        // A slow open loop: each worker answers a few times a second, far fewer than any batch.
        let at = |n: u64| t0 + Duration::from_millis(n);
        workers[0].record(Operation::Detail, at(0), at(3), Ok(()));
        workers[1].record(Operation::Detail, at(10), at(12), Ok(()));
        workers[2].record(Operation::Detail, at(20), at(25), Err("timeout".into()));
        assert_eq!(
            progress.totals(),
            ProgressTotals {
                ok: 2,
                errors: 1,
                latency_us: 5000
            }
        );
        workers[3].record(Operation::Detail, at(30), at(31), Ok(()));
        assert_eq!(progress.totals().ok, 3);
    }

    #[test]
    fn open_loop_counts_late_answers_by_their_intended_start() {
        let t0 = Instant::now();
        let window = Window {
            from: t0,
            until: t0 + Duration::from_secs(1),
            open_loop: true,
        };
        let mut recorder = Recorder::new(window, Arc::new(Progress::default()));
        let late = t0 + Duration::from_millis(900);
        recorder.record(Operation::Raw, late, late + Duration::from_secs(2), Ok(()));
        let report = recorder.report(settings());
        assert_eq!(report.operations[0].ok, 1);
        // The rate is over the time the answers took to come, not the nominal window.
        assert_near(report.measured_secs, 2.9);
        assert_near(report.operations[0].latency_ms.unwrap().p50, 2000.0);
    }
}
