//! Saving in the background: snapshots of the items, a thread that writes
//! and commits them, and the limits that bound the memory they hold.

mod background;
mod snapshot;

pub use self::background::AsyncOptions;
pub(crate) use self::{
    background::Background,
    snapshot::{snapshot_items, staging_bytes},
};

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use ckpt_colocated::{Controller, InProcessRuntime};
    use ckpt_device::Topology;

    /// Starts a controller over two simulated hosts with two devices each.
    pub(crate) fn controller() -> Arc<Controller> {
        let topology = Topology::uniform(2, 2).unwrap();
        Arc::new(Controller::new(Arc::new(InProcessRuntime::new(topology).unwrap())))
    }
}
