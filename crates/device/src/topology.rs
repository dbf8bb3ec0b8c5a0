use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DeviceError;

/// Global id of a device, unique across all hosts, as JAX's `Device.id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One device and the host (process) that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Device {
    /// Global device id.
    pub id: DeviceId,
    /// Index of the owning process, as JAX's `Device.process_index`.
    pub host: usize,
    /// Platform name, such as `"cpu"`, `"gpu"` or `"tpu"`.
    pub kind: String,
}

/// The hosts of a deployment and the devices local to each.
///
/// Hosts are numbered `0..num_hosts()`. A host index below the largest one
/// may have no devices, in which case [`Topology::host_devices`] returns an
/// empty list for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Device>", into = "Vec<Device>")]
pub struct Topology {
    devices: Vec<Device>,
    position: HashMap<DeviceId, usize>,
    num_hosts: usize,
}

impl Topology {
    /// Creates a topology from a list of devices, rejecting an empty list or a repeated id.
    pub fn new(devices: Vec<Device>) -> Result<Topology, DeviceError> {
        if devices.is_empty() {
            return Err(DeviceError::EmptyTopology);
        }
        let mut position = HashMap::with_capacity(devices.len());
        for (index, device) in devices.iter().enumerate() {
            if position.insert(device.id, index).is_some() {
                return Err(DeviceError::DuplicateDevice { device: device.id });
            }
        }
        let largest_host = devices.iter().map(|device| device.host).max().unwrap_or(0);
        Ok(Topology {
            devices,
            position,
            num_hosts: largest_host.saturating_add(1),
        })
    }

    /// Creates `hosts` hosts with `devices_per_host` CPU devices each.
    ///
    /// Device `i` of host `h` gets id `h * devices_per_host + i`, so ids run
    /// from 0 in host order. Both counts must be at least 1.
    pub fn uniform(hosts: usize, devices_per_host: usize) -> Result<Topology, DeviceError> {
        let too_large = || DeviceError::TopologyTooLarge {
            hosts,
            devices_per_host,
        };
        let count = hosts.checked_mul(devices_per_host).ok_or_else(too_large)?;
        if u32::try_from(count).is_err() {
            return Err(too_large());
        }
        let devices = (0..count)
            .map(|index| Device {
                id: DeviceId(index as u32),
                host: index / devices_per_host,
                kind: "cpu".to_owned(),
            })
            .collect();
        Topology::new(devices)
    }

    /// All devices, in the order given at construction.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Ids of all devices, in the order given at construction.
    pub fn device_ids(&self) -> Vec<DeviceId> {
        self.devices.iter().map(|device| device.id).collect()
    }

    /// Number of hosts: one more than the largest host index of any device.
    pub fn num_hosts(&self) -> usize {
        self.num_hosts
    }

    /// Returns the device with `id`, if the topology has it.
    pub fn device(&self, id: DeviceId) -> Option<&Device> {
        self.position.get(&id).map(|&index| &self.devices[index])
    }

    /// Returns the host that owns device `id`, if the topology has it.
    pub fn host_of(&self, id: DeviceId) -> Option<usize> {
        self.device(id).map(|device| device.host)
    }

    /// Returns the ids of the devices local to `host`, in construction order.
    pub fn host_devices(&self, host: usize) -> Vec<DeviceId> {
        self.devices
            .iter()
            .filter(|device| device.host == host)
            .map(|device| device.id)
            .collect()
    }
}

impl TryFrom<Vec<Device>> for Topology {
    type Error = DeviceError;

    fn try_from(devices: Vec<Device>) -> Result<Topology, DeviceError> {
        Topology::new(devices)
    }
}

impl From<Topology> for Vec<Device> {
    fn from(topology: Topology) -> Vec<Device> {
        topology.devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: u32, host: usize) -> Device {
        Device {
            id: DeviceId(id),
            host,
            kind: "cpu".to_owned(),
        }
    }

    #[test]
    fn uniform_numbers_devices_by_host() {
        let topology = Topology::uniform(2, 3).unwrap();
        assert_eq!(topology.num_hosts(), 2);
        assert_eq!(topology.devices().len(), 6);
        assert_eq!(
            topology.host_devices(1),
            vec![DeviceId(3), DeviceId(4), DeviceId(5)]
        );
        assert_eq!(topology.host_of(DeviceId(2)), Some(0));
        assert_eq!(topology.host_of(DeviceId(5)), Some(1));
    }

    #[test]
    fn uniform_kind_is_cpu() {
        let topology = Topology::uniform(1, 1).unwrap();
        assert_eq!(topology.device(DeviceId(0)).unwrap().kind, "cpu");
    }

    #[test]
    fn uniform_too_large() {
        let err = Topology::uniform(1 << 20, 1 << 13).unwrap_err();
        assert!(matches!(err, DeviceError::TopologyTooLarge { .. }));
        let err = Topology::uniform(usize::MAX, 2).unwrap_err();
        assert!(matches!(err, DeviceError::TopologyTooLarge { .. }));
    }

    #[test]
    fn uniform_zero_is_empty() {
        let err = Topology::uniform(0, 4).unwrap_err();
        assert!(matches!(err, DeviceError::EmptyTopology));
    }

    #[test]
    fn new_rejects_duplicate_id() {
        let err = Topology::new(vec![device(0, 0), device(0, 1)]).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::DuplicateDevice {
                device: DeviceId(0)
            }
        ));
    }

    #[test]
    fn new_rejects_empty() {
        let err = Topology::new(Vec::new()).unwrap_err();
        assert!(matches!(err, DeviceError::EmptyTopology));
    }

    #[test]
    fn sparse_ids_and_hosts() {
        // Multi-process JAX on CPU numbers the second process's devices from 2048.
        let topology = Topology::new(vec![device(0, 0), device(2048, 2)]).unwrap();
        assert_eq!(topology.num_hosts(), 3);
        assert_eq!(topology.host_devices(1), Vec::<DeviceId>::new());
        assert_eq!(topology.host_of(DeviceId(2048)), Some(2));
        assert_eq!(topology.host_of(DeviceId(1)), None);
    }

    #[test]
    fn serde_validates() {
        let json = r#"[{"id": 1, "host": 0, "kind": "cpu"}, {"id": 1, "host": 0, "kind": "cpu"}]"#;
        assert!(serde_json::from_str::<Topology>(json).is_err());
        let topology = Topology::uniform(2, 2).unwrap();
        let text = serde_json::to_string(&topology).unwrap();
        assert_eq!(serde_json::from_str::<Topology>(&text).unwrap(), topology);
    }
}
