//! Driving the load: workers, each with its own keep-alive connection, in a closed loop (send
//! again as soon as the answer came) or an open loop (sends at a fixed rate of intended start
//! times, latency counted from the intended time, so a stall is not hidden by the generator
//! waiting along with it: no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::time::sleep_until;

use crate::config::LoadArgs;
use crate::http::{Call, Connection, Target};
use crate::lanes::Lanes;
use crate::mix::{Action, Mix};
use crate::report::{Operation, Progress, ProgressTotals, Recorder, Report, Settings, Window};
use crate::shop::{SetupPlan, Shop, Shopper};

/// What a worker does next.
enum Turn {
    /// Send now; the request counts as started at this instant.
    Send(Instant),
    /// An open-loop request whose intended start is so far behind that the run gave up on
    /// sending it: it counts as an error (`unsent`), not as silence.
    GiveUp(Instant),
    Stop,
}

/// When each worker sends its next request.
#[derive(Clone)]
enum Pace {
    Closed,
    /// Intended start `k` is at `start + k * interval`; `next` hands out `k` to the workers.
    Open {
        start: Instant,
        interval: Duration,
        next: Arc<AtomicU64>,
    },
}

impl Pace {
    /// Waits for the next request's start. `end` is the end of the measurement; an open loop
    /// that fell behind sends what was due before it until `give_up`.
    async fn next_turn(&self, end: Instant, give_up: Instant) -> Turn {
        match self {
            Pace::Closed => {
                let now = Instant::now();
                if now < end {
                    Turn::Send(now)
                } else {
                    Turn::Stop
                }
            }
            Pace::Open {
                start,
                interval,
                next,
            } => {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let intended = *start + interval.mul_f64(k as f64);
                if intended >= end {
                    return Turn::Stop;
                }
                if Instant::now() >= give_up {
                    return Turn::GiveUp(intended);
                }
                sleep_until(intended.into()).await;
                Turn::Send(intended)
            }
        }
    }
}

/// What a worker does with each turn.
enum Work {
    Shop { mix: Mix, shop: Arc<Shop> },
    Raw { method: Method, path: String },
}

pub async fn run(args: LoadArgs, lanes: usize) -> Result<Report, String> {
    let (target, work, url) = match &args.raw {
        Some(raw) => {
            let method: Method = raw[0]
                .to_uppercase()
                .parse()
                .map_err(|_| format!("'{}' is not an HTTP method", raw[0]))?;
            let (target, path) = Target::parse(&raw[1])?;
            (target, Work::Raw { method, path }, raw[1].clone())
        }
        None => {
            let (target, _) = Target::parse(&args.shop.target_url)?;
            let mix = args.mix();
            let mut setup = Connection::new(target.clone(), args.timeout);
            let users = if mix.actions().any(Action::needs_user) {
                args.users.unwrap_or(args.connections).max(1)
            } else {
                0
            };
            let plan = SetupPlan {
                admin_user: &args.shop.admin_user,
                admin_password: &args.shop.admin_password,
                products: args.products.max(1),
                users,
            };
            let shop = Arc::new(Shop::set_up(&mut setup, &plan).await?);
            (
                target,
                Work::Shop { mix, shop },
                args.shop.target_url.clone(),
            )
        }
    };
    let work = Arc::new(work);

    let start = Instant::now();
    let window = Window {
        from: start + args.warmup,
        until: start + args.warmup + args.duration,
        open_loop: args.rate.is_some(),
    };
    let pace = match args.rate {
        None => Pace::Closed,
        Some(rate) => Pace::Open {
            start,
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Arc::new(AtomicU64::new(0)),
        },
    };
    // An open loop that fell behind keeps sending what was due for one timeout more.
    let give_up = window.until + args.timeout;
    let progress = Arc::new(Progress::default());
    let ticker = tokio::spawn(print_progress(progress.clone(), start, window));

    let lanes = Lanes::start(lanes).map_err(|e| format!("cannot start the worker threads: {e}"))?;
    let mut workers = tokio::task::JoinSet::new();
    for number in 0..args.connections {
        let mut conn = Connection::new(target.clone(), args.timeout);
        let mut rec = Recorder::new(window, progress.clone());
        let work = work.clone();
        let pace = pace.clone();
        let fixed_product = args.fixed_product;
        let lane = lanes.of(number).clone();
        workers.spawn_on(
            async move {
                let mut shopper = match &*work {
                    Work::Shop { shop, .. } => {
                        Some(Shopper::new(shop.clone(), number, fixed_product))
                    }
                    Work::Raw { .. } => None,
                };
                let mut rng = fastrand::Rng::new();
                loop {
                    let began = match pace.next_turn(window.until, give_up).await {
                        Turn::Send(began) => began,
                        Turn::GiveUp(intended) => {
                            let operation = match &*work {
                                Work::Shop { mix, .. } => {
                                    Shopper::first_operation(mix.pick(rng.u32(..mix.total())))
                                }
                                Work::Raw { .. } => Operation::Raw,
                            };
                            rec.record(operation, intended, intended, Err("unsent".to_owned()));
                            continue;
                        }
                        Turn::Stop => break,
                    };
                    match (&*work, &mut shopper) {
                        (Work::Shop { mix, .. }, Some(shopper)) => {
                            let action = mix.pick(rng.u32(..mix.total()));
                            shopper.act(action, &mut conn, &mut rec, began).await;
                        }
                        (Work::Raw { method, path }, _) => {
                            let call = Call {
                                method: method.clone(),
                                ..Call::get(path)
                            };
                            let result = conn.send(call).await;
                            let outcome = match result {
                                Ok(reply) if reply.status.is_success() => Ok(()),
                                Ok(reply) => Err(reply.status.as_u16().to_string()),
                                Err(failure) => Err(failure.label().to_owned()),
                            };
                            rec.record(Operation::Raw, began, Instant::now(), outcome);
                        }
                        (Work::Shop { .. }, None) => unreachable!("shop work has a shopper"),
                    }
                }
                rec
            },
            &lane,
        );
    }

    let mut merged = Recorder::new(window, Arc::new(Progress::default()));
    while let Some(joined) = workers.join_next().await {
        merged.merge(joined.map_err(|e| format!("a worker failed: {e}"))?);
    }
    ticker.abort();
    drop(lanes);

    let settings = Settings {
        target: url,
        model: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        connections: args.connections,
        rate_per_sec: args.rate,
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: args.duration.as_secs_f64(),
        mix: match &*work {
            Work::Shop { mix, .. } => mix
                .percentages()
                .into_iter()
                .map(|(a, p)| (a.name().to_owned(), p))
                .collect(),
            Work::Raw { .. } => BTreeMap::new(),
        },
        raw: args.raw.as_ref().map(|r| r.join(" ")),
        fixed_product: args.fixed_product,
    };
    Ok(merged.report(settings))
}

/// A line a second on stderr: successes and errors per second and their mean latency.
async fn print_progress(progress: Arc<Progress>, start: Instant, window: Window) {
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let (mut ok0, mut err0, mut lat0) = (0, 0, 0);
    loop {
        let now = tick.tick().await.into_std();
        let ProgressTotals {
            ok,
            errors,
            latency_us: latency,
        } = progress.totals();
        let (d_ok, d_err, d_lat) = (ok - ok0, errors - err0, latency - lat0);
        (ok0, err0, lat0) = (ok, errors, latency);
        let phase = if now <= window.from {
            "warm-up"
        } else if now <= window.until {
            "measure"
        } else {
            "drain"
        };
        let mean = if d_ok > 0 {
            d_lat as f64 / d_ok as f64 / 1000.0
        } else {
            0.0
        };
        eprintln!(
            "[{:>4}s {phase:<7}] {d_ok:>7} ok/s {d_err:>6} errors/s  mean {mean:.2} ms",
            now.duration_since(start).as_secs()
        );
    }
}
