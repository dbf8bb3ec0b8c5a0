use std::{
    fmt::Debug,
    sync::Arc,
    thread::{self, JoinHandle},
};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use ckpt_device::{DeviceMemory, HostMemory, Topology};
use tracing::warn;

use crate::{
    protocol::{HostCall, HostReply},
    ColocatedError, HostState, Result,
};

/// Transport between a controller and its hosts.
///
/// A runtime only delivers [`HostCall`]s and returns [`HostReply`]s; what a
/// host does with them is [`HostState`]'s job and what a controller asks is
/// [`crate::Controller`]'s. The in-process runtime runs each host on a
/// thread; a multi-process runtime runs each in a worker process.
pub trait Runtime: Send + Sync + Debug {
    /// The hosts and their devices.
    fn topology(&self) -> &Topology;

    /// Sends each call to its host, all at once, and returns the replies in
    /// the same order. A host that fails yields an error in its place.
    fn call_hosts(&self, calls: Vec<(usize, HostCall)>) -> Vec<Result<HostReply>>;
}

type Envelope = (HostCall, Sender<Result<HostReply>>);

/// A runtime whose hosts are threads of this process, talking over channels.
///
/// Each host thread owns its devices' shards; the controller never touches
/// them except through requests, exactly as with worker processes, so
/// tests of colocated checkpointing need no network.
#[derive(Debug)]
pub struct InProcessRuntime {
    topology: Topology,
    senders: Vec<Sender<Envelope>>,
    threads: Vec<JoinHandle<()>>,
}

impl InProcessRuntime {
    /// Starts one thread per host of `topology`, with simulated devices in host memory.
    pub fn new(topology: Topology) -> Result<InProcessRuntime> {
        InProcessRuntime::with_memory(topology, Arc::new(HostMemory))
    }

    /// Starts one thread per host of `topology`, with the given device memory.
    pub fn with_memory(
        topology: Topology,
        memory: Arc<dyn DeviceMemory>,
    ) -> Result<InProcessRuntime> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for host in 0..topology.num_hosts() {
            let (sender, receiver) = unbounded::<Envelope>();
            let state = HostState::new(host, topology.clone(), Arc::clone(&memory));
            let thread = thread::Builder::new()
                .name(format!("ckpt-host-{host}"))
                .spawn(move || serve(state, receiver))
                .map_err(|err| ColocatedError::HostUnavailable {
                    host,
                    reason: format!("could not start its thread: {err}"),
                })?;
            senders.push(sender);
            threads.push(thread);
        }
        Ok(InProcessRuntime {
            topology,
            senders,
            threads,
        })
    }
}

fn serve(mut state: HostState, receiver: Receiver<Envelope>) {
    for (call, reply) in receiver {
        let result = state.handle(call);
        if reply.send(result).is_err() {
            warn!(host = state.host(), "controller stopped waiting for a reply");
        }
    }
}

impl Runtime for InProcessRuntime {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn call_hosts(&self, calls: Vec<(usize, HostCall)>) -> Vec<Result<HostReply>> {
        let pending: Vec<(usize, Result<Receiver<Result<HostReply>>>)> = calls
            .into_iter()
            .map(|(host, call)| {
                let Some(sender) = self.senders.get(host) else {
                    let err = ColocatedError::UnknownHost {
                        host,
                        num_hosts: self.senders.len(),
                    };
                    return (host, Err(err));
                };
                let (reply_sender, reply_receiver) = bounded(1);
                let sent = sender.send((call, reply_sender)).map_err(|_| {
                    ColocatedError::HostUnavailable {
                        host,
                        reason: "its thread has exited".into(),
                    }
                });
                (host, sent.map(|()| reply_receiver))
            })
            .collect();
        pending
            .into_iter()
            .map(|(host, receiver)| {
                receiver?.recv().unwrap_or_else(|_| {
                    Err(ColocatedError::HostUnavailable {
                        host,
                        reason: "its thread exited before replying".into(),
                    })
                })
            })
            .collect()
    }
}

impl Drop for InProcessRuntime {
    fn drop(&mut self) {
        // Closing the channels ends each host's loop.
        self.senders.clear();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                warn!("a host thread panicked");
            }
        }
    }
}
