//! The standard process metrics, with CPU time at clock-tick resolution.

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::{Counter, MetricFamily};

const CPU_SECONDS: &str = "process_cpu_seconds_total";

/// The `prometheus` process collector, except that `process_cpu_seconds_total` keeps its
/// fraction. prometheus 0.14 divides the clock ticks by the tick rate in integers, so its value
/// moves in whole seconds, too coarse for the CPU cost of a short load test.
pub(crate) struct ProcessMetrics {
    inner: ProcessCollector,
}

impl ProcessMetrics {
    pub(crate) fn new() -> ProcessMetrics {
        ProcessMetrics {
            inner: ProcessCollector::for_self(),
        }
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        let Some(seconds) = cpu_seconds() else {
            return families;
        };
        let cpu = families
            .iter_mut()
            .filter(|family| family.name() == CPU_SECONDS)
            .flat_map(|family| family.mut_metric().iter_mut());
        for metric in cpu {
            let mut counter = Counter::default();
            counter.set_value(seconds);
            metric.set_counter(counter);
        }
        families
    }
}

/// User and system CPU time of this process, in seconds, at the resolution of the kernel's
/// clock tick (10 ms where the tick rate is 100 Hz).
fn cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let ticks = stat.utime.saturating_add(stat.stime);
    let rate = procfs::ticks_per_second();
    (rate > 0).then(|| ticks as f64 / rate as f64)
}
