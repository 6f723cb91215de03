//! The GPU's memory and utilisation for the stt service's `/metrics`, from NVML (the NVIDIA driver's
//! management library, opened at run time: a machine without the driver has no readings).

use std::sync::Arc;

use aldea_engine::Device;
use aldea_stt::metrics::{DeviceMonitor, DeviceReading};
use nvml_wrapper::Nvml;

struct NvmlMonitor {
    nvml: Nvml,
    /// NVML's index of the device (NVML ignores `CUDA_VISIBLE_DEVICES`).
    index: u32,
}

impl DeviceMonitor for NvmlMonitor {
    fn read(&self) -> Vec<DeviceReading> {
        let Ok(device) = self.nvml.device_by_index(self.index) else {
            return Vec::new();
        };
        let Ok(memory) = device.memory_info() else {
            return Vec::new();
        };
        vec![DeviceReading {
            index: self.index,
            name: device.name().unwrap_or_else(|_| "unknown".to_owned()),
            memory_used_bytes: memory.used,
            memory_total_bytes: memory.total,
            utilization: device.utilization_rates().ok().map(|u| f64::from(u.gpu) / 100.0),
        }]
    }
}

/// NVML's index of CUDA's device `cuda_index`: the entry of a numeric `CUDA_VISIBLE_DEVICES` list,
/// else the same index (NVML counts in PCI bus order, as CUDA does with
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID`; on one GPU they agree).
fn nvml_index(cuda_index: usize, visible: Option<&str>) -> Option<u32> {
    match visible.map(str::trim).filter(|v| !v.is_empty()) {
        Some(list) => list.split(',').nth(cuda_index)?.trim().parse().ok(),
        None => u32::try_from(cuda_index).ok(),
    }
}

/// A monitor of `device` when it is a GPU that NVML can read.
pub(crate) fn monitor(device: Device) -> Option<Arc<dyn DeviceMonitor>> {
    let Device::Cuda(cuda_index) = device else {
        return None;
    };
    let Some(index) = nvml_index(cuda_index, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref()) else {
        tracing::warn!(cuda_index, "CUDA_VISIBLE_DEVICES does not name this device by number; GPU metrics are off");
        return None;
    };
    match Nvml::init() {
        Ok(nvml) => Some(Arc::new(NvmlMonitor { nvml, index })),
        Err(e) => {
            tracing::warn!(error = %e, "NVML is not available; GPU metrics are off");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_indices_map_through_a_numeric_visible_devices_list() {
        assert_eq!(nvml_index(0, None), Some(0));
        assert_eq!(nvml_index(2, Some("")), Some(2));
        assert_eq!(nvml_index(0, Some("3,1")), Some(3));
        assert_eq!(nvml_index(1, Some("3, 1")), Some(1));
        assert_eq!(nvml_index(2, Some("3,1")), None);
        assert_eq!(nvml_index(0, Some("GPU-8f6c")), None);
    }

    #[test]
    fn the_cpu_has_no_monitor() {
        assert!(monitor(Device::Cpu).is_none());
    }
}
