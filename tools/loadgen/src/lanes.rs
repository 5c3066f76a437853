//! Where the workers run: one single-threaded runtime per thread, each worker and its
//! connection pinned to one of them, as wrk runs one event loop per thread. An answer then
//! wakes its worker on the thread that read it; on a shared multi-threaded runtime the two
//! tasks of a request drift apart and each wakeup may unpark another thread, which on a
//! two-core machine cost the generator about a fifth of its rate against a bare server.

use std::io;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

pub struct Lanes {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// `count` lanes (at least one), each a thread running its own runtime until dropped.
    pub fn start(count: usize) -> io::Result<Lanes> {
        let mut lanes = Lanes {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for number in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            lanes.handles.push(runtime.handle().clone());
            lanes.stops.push(stop);
            lanes.threads.push(
                std::thread::Builder::new()
                    .name(format!("loadgen-lane-{number}"))
                    .spawn(move || {
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    })?,
            );
        }
        Ok(lanes)
    }

    /// The lane of worker `number`: workers are dealt round the lanes.
    pub fn of(&self, number: usize) -> &Handle {
        &self.handles[number % self.handles.len()]
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
