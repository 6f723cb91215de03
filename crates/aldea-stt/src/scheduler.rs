//! One scheduler shares the model between every stream and upload: work arrives as 30-s windows on
//! a bounded queue; a worker thread (one on the CPU; on a GPU two, each calling its own model
//! replica, taking turns at the queue) takes the first window, waits a few milliseconds for more (or
//! until the batch is full), and runs compatible windows as one batched model call. Each stream and
//! each upload has at most one window queued at a time, so first-come order is also fair between
//! them: a long upload goes window by window between the streams' windows. Urgent windows (a
//! stream's decode that ends an utterance, whose final a client waits for) go ahead of the others;
//! since each stream has one window at a time, they delay the others by at most one window per
//! stream.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aldea_engine::{EngineError, TranscribeOptions, Transcriber, WindowJob, WindowOutput};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Who is waiting for a window (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Stream,
    Upload,
}

/// What the scheduler is given: mel frames already made (uploads), or samples it turns into a
/// window on its own thread (streams, so that sessions never do heavy work on the async runtime).
#[derive(Debug)]
pub enum WindowInput {
    Mel(WindowJob),
    Samples {
        samples: Vec<f32>,
        previous_tokens: Vec<u32>,
        /// Text tokens of committed words at the start of `samples` ([`WindowJob::prefix`]).
        prefix: Vec<u32>,
        /// Seconds into `samples` where the prefix's speech ends ([`WindowJob::prefix_end`]).
        prefix_end: f64,
        language: Option<String>,
        options: Arc<TranscribeOptions>,
    },
}

/// A finished window: the model's output and the window's content frames.
#[derive(Debug)]
pub struct WindowDone {
    pub output: WindowOutput,
    pub n_frames: usize,
    /// Time from queueing to the result.
    pub latency: Duration,
}

struct Job {
    input: WindowInput,
    kind: JobKind,
    /// Taken before the queued jobs that are not.
    urgent: bool,
    queued_at: Instant,
    reply: oneshot::Sender<Result<WindowDone, EngineError>>,
}

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("the scheduler has stopped")]
    Stopped,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    pub max_batch: usize,
    pub batch_window: Duration,
    pub queue_capacity: usize,
    /// Threads that take batches off the queue and call the model, each with a batch of its own
    /// (the engine needs as many replicas for the calls to overlap).
    pub workers: usize,
    /// Trim each stream window's previous text to a bucket length ([`WindowJob::bucket_context`])
    /// so that more windows share a call.
    pub bucket_context: bool,
    /// Make a batch's log-mel windows on every core instead of one after another.
    pub parallel_prep: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch: 8,
            batch_window: Duration::from_millis(4),
            queue_capacity: 256,
            workers: 1,
            bucket_context: false,
            parallel_prep: false,
        }
    }
}

/// The queue the workers share: the channel and the jobs taken off it but not run yet.
struct Queue {
    rx: mpsc::Receiver<Job>,
    /// Jobs taken off the channel and not run yet, in arrival order.
    pending: Vec<Job>,
}

/// Handle to the scheduler's workers. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Job>,
    queue_depth: Arc<AtomicUsize>,
    /// Windows queued or running, whose callers wait for them.
    in_system: Arc<AtomicUsize>,
    /// Exponential average of the queue wait, in microseconds (the admission signal).
    wait_ewma_us: Arc<AtomicU64>,
    /// Exponential average of a model call's duration, in microseconds.
    call_ewma_us: Arc<AtomicU64>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("queue_depth", &self.queue_depth()).finish()
    }
}

impl Scheduler {
    /// Starts the scheduler's worker threads; they stop when every handle is dropped.
    pub fn start(transcriber: Transcriber, config: SchedulerConfig, metrics: Arc<Metrics>) -> Scheduler {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let queue_depth = Arc::new(AtomicUsize::new(0));
        let wait_ewma_us = Arc::new(AtomicU64::new(0));
        let call_ewma_us = Arc::new(AtomicU64::new(0));
        let queue = Arc::new(Mutex::new(Queue { rx, pending: Vec::new() }));
        for index in 0..config.workers.max(1) {
            let worker = Worker {
                transcriber: transcriber.clone(),
                config,
                metrics: metrics.clone(),
                queue_depth: queue_depth.clone(),
                wait_ewma_us: wait_ewma_us.clone(),
                call_ewma_us: call_ewma_us.clone(),
            };
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("aldea-scheduler-{index}"))
                .spawn(move || worker.run(&queue))
                .expect("spawning the scheduler thread");
        }
        Scheduler { tx, queue_depth, in_system: Arc::new(AtomicUsize::new(0)), wait_ewma_us, call_ewma_us }
    }

    /// Windows queued or being decoded (the model is idle at 0).
    pub fn windows_in_progress(&self) -> usize {
        self.in_system.load(Ordering::Relaxed)
    }

    /// Windows waiting for the model.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Recent average wait of a window before the model takes it.
    pub fn recent_wait(&self) -> Duration {
        Duration::from_micros(self.wait_ewma_us.load(Ordering::Relaxed))
    }

    /// Recent average duration of a model call (zero before the first).
    pub fn recent_call(&self) -> Duration {
        Duration::from_micros(self.call_ewma_us.load(Ordering::Relaxed))
    }

    /// Queues a window and waits for its result.
    pub async fn run(&self, input: WindowInput, kind: JobKind) -> Result<WindowDone, ScheduleError> {
        self.submit(input, kind, false).await
    }

    /// [`Scheduler::run`] for a window whose result someone is waiting on now (a stream's final):
    /// it goes ahead of the queued windows that are not urgent.
    pub async fn run_urgent(&self, input: WindowInput, kind: JobKind) -> Result<WindowDone, ScheduleError> {
        self.submit(input, kind, true).await
    }

    async fn submit(&self, input: WindowInput, kind: JobKind, urgent: bool) -> Result<WindowDone, ScheduleError> {
        let _in_system = InSystem::enter(&self.in_system);
        let (reply, rx) = oneshot::channel();
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        let job = Job { input, kind, urgent, queued_at: Instant::now(), reply };
        if self.tx.send(job).await.is_err() {
            self.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(ScheduleError::Stopped);
        }
        rx.await.map_err(|_| ScheduleError::Stopped)?.map_err(ScheduleError::Engine)
    }

    /// [`Scheduler::run`] from a blocking thread (the long-form loop of an upload).
    pub fn run_blocking(&self, input: WindowInput, kind: JobKind) -> Result<WindowDone, ScheduleError> {
        let _in_system = InSystem::enter(&self.in_system);
        let (reply, rx) = oneshot::channel();
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        let job = Job { input, kind, urgent: false, queued_at: Instant::now(), reply };
        if self.tx.blocking_send(job).is_err() {
            self.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(ScheduleError::Stopped);
        }
        rx.blocking_recv().map_err(|_| ScheduleError::Stopped)?.map_err(ScheduleError::Engine)
    }
}

/// Counts a window from its submission until its caller has the result or gives up.
struct InSystem<'a>(&'a AtomicUsize);

impl<'a> InSystem<'a> {
    fn enter(count: &'a AtomicUsize) -> InSystem<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InSystem(count)
    }
}

impl Drop for InSystem<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Worker {
    transcriber: Transcriber,
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
    queue_depth: Arc<AtomicUsize>,
    wait_ewma_us: Arc<AtomicU64>,
    call_ewma_us: Arc<AtomicU64>,
}

/// An exponential average in microseconds (weight 1/8) after one more `sample`.
fn blend(previous_us: u64, sample: Duration) -> u64 {
    (previous_us * 7 + sample.as_micros() as u64) / 8
}

/// `f` over `items` in order, spread over the machine's cores when there are several items. A panic
/// of `f` comes back to the caller.
fn parallel_map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(per_thread).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            chunks.into_iter().map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<U>>())).collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// The next batch from `pending`: urgent jobs first, then the others, each in arrival order.
fn take_batch(pending: &mut Vec<Job>, max_batch: usize) -> Vec<Job> {
    let (mut batch, rest): (Vec<Job>, Vec<Job>) = std::mem::take(pending).into_iter().partition(|job| job.urgent);
    batch.extend(rest);
    let keep = batch.split_off(max_batch.max(1).min(batch.len()));
    *pending = keep;
    batch
}

/// A job whose window is ready for the model.
struct Ready {
    window: WindowJob,
    kind: JobKind,
    queued_at: Instant,
    reply: oneshot::Sender<Result<WindowDone, EngineError>>,
}

impl Worker {
    fn run(self, queue: &Mutex<Queue>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "the scheduler could not start its timer");
                return;
            }
        };
        loop {
            // One worker at a time gathers a batch; the others wait here for the next.
            let batch = {
                let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                let Queue { rx, pending } = &mut *queue;
                let more = runtime.block_on(async {
                    if pending.is_empty() {
                        pending.push(rx.recv().await?);
                        let deadline = tokio::time::Instant::now() + self.config.batch_window;
                        while pending.len() < self.config.max_batch {
                            match tokio::time::timeout_at(deadline, rx.recv()).await {
                                Ok(Some(job)) => pending.push(job),
                                _ => break,
                            }
                        }
                    }
                    Some(())
                });
                if more.is_none() {
                    return;
                }
                while let Ok(job) = rx.try_recv() {
                    pending.push(job);
                }
                take_batch(pending, self.config.max_batch)
            };
            self.queue_depth.fetch_sub(batch.len(), Ordering::Relaxed);
            self.run_batch(batch);
        }
    }

    fn run_batch(&self, batch: Vec<Job>) {
        let (inputs, jobs): (Vec<WindowInput>, Vec<_>) =
            batch.into_iter().map(|job| (job.input, (job.kind, job.queued_at, job.reply))).unzip();
        let kinds: Vec<JobKind> = jobs.iter().map(|(kind, _, _)| *kind).collect();
        let to_window = |(input, kind): (WindowInput, JobKind)| {
            let mut window = match input {
                WindowInput::Mel(window) => window,
                WindowInput::Samples { samples, previous_tokens, prefix, prefix_end, language, options } => {
                    let (mel, n_frames) = self.transcriber.mel_window(&samples);
                    WindowJob { mel, n_frames, previous_tokens, language, options, keep_tail: true, prefix, prefix_end }
                }
            };
            // Streams' windows only: an upload's prompt stays what `aldea transcribe` gives it.
            if self.config.bucket_context && kind == JobKind::Stream {
                window.bucket_context();
            }
            window
        };
        let inputs: Vec<(WindowInput, JobKind)> = inputs.into_iter().zip(kinds).collect();
        // The log-mel of each window; on every core where batches are large (a GPU's: made one after
        // another here, they would keep the device waiting).
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.config.parallel_prep {
                parallel_map(inputs, to_window)
            } else {
                inputs.into_iter().map(to_window).collect()
            }
        }));
        let Ok(windows) = prepared else {
            for (_, _, reply) in jobs {
                let _ = reply.send(Err(EngineError::Inference("preparing this batch's audio panicked".to_owned())));
            }
            return;
        };
        let mut ready: Vec<Ready> = windows
            .into_iter()
            .zip(jobs)
            .map(|(window, (kind, queued_at, reply))| Ready { window, kind, queued_at, reply })
            .collect();
        // Compatible windows (same options and language) share a call; order within each is kept.
        while !ready.is_empty() {
            let lead = ready.remove(0);
            let (mut group, rest): (Vec<Ready>, Vec<Ready>) =
                ready.into_iter().partition(|r| lead.window.batches_with(&r.window));
            ready = rest;
            group.insert(0, lead);
            self.run_group(group);
        }
    }

    fn run_group(&self, group: Vec<Ready>) {
        let started = Instant::now();
        for job in &group {
            let wait = started.duration_since(job.queued_at);
            let previous = self.wait_ewma_us.load(Ordering::Relaxed);
            self.wait_ewma_us.store(blend(previous, wait), Ordering::Relaxed);
        }
        let windows: Vec<WindowJob> = group.iter().map(|r| r.window.clone()).collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.transcriber.run_windows(&windows)))
            .unwrap_or_else(|_| Err(EngineError::Inference("the model panicked on this batch".to_owned())));
        self.metrics.batch_size.observe(group.len() as f64);
        let took = started.elapsed();
        self.metrics.batch_seconds.observe(took.as_secs_f64());
        // Seeded with the first call: the pace it sets should not start from zero.
        let previous = self.call_ewma_us.load(Ordering::Relaxed);
        let average = if previous == 0 { took.as_micros() as u64 } else { blend(previous, took) };
        self.call_ewma_us.store(average, Ordering::Relaxed);
        match result {
            Ok(outputs) => {
                for (job, output) in group.into_iter().zip(outputs) {
                    let done = WindowDone { output, n_frames: job.window.n_frames, latency: job.queued_at.elapsed() };
                    match job.kind {
                        JobKind::Stream => self.metrics.stream_window_seconds.observe(done.latency.as_secs_f64()),
                        JobKind::Upload => self.metrics.upload_window_seconds.observe(done.latency.as_secs_f64()),
                    }
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, windows = group.len(), "a batch failed");
                let message = e.to_string();
                for job in group {
                    let _ = job.reply.send(Err(EngineError::Inference(message.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_the_order_and_returns_panics() {
        let out = parallel_map((0..103).collect(), |i: u32| i * 2);
        assert_eq!(out, (0..103).map(|i| i * 2).collect::<Vec<_>>());
        assert!(parallel_map(Vec::<u32>::new(), |i| i).is_empty());
        let caught = std::panic::catch_unwind(|| parallel_map((0..9).collect(), |i: u32| assert_ne!(i, 7)));
        assert!(caught.is_err());
    }

    fn job(urgent: bool, tag: usize) -> Job {
        let (reply, _) = oneshot::channel();
        let input = WindowInput::Samples {
            samples: vec![0.0; tag],
            previous_tokens: Vec::new(),
            prefix: Vec::new(),
            prefix_end: 0.0,
            language: None,
            options: Arc::new(TranscribeOptions::default()),
        };
        Job { input, kind: JobKind::Stream, urgent, queued_at: Instant::now(), reply }
    }

    fn tags(jobs: &[Job]) -> Vec<usize> {
        jobs.iter()
            .map(|j| match &j.input {
                WindowInput::Samples { samples, .. } => samples.len(),
                WindowInput::Mel(_) => usize::MAX,
            })
            .collect()
    }

    #[test]
    fn urgent_windows_go_first_and_each_class_keeps_its_order() {
        let mut pending = vec![job(false, 1), job(true, 2), job(false, 3), job(true, 4), job(false, 5)];
        let batch = take_batch(&mut pending, 3);
        assert_eq!(tags(&batch), [2, 4, 1]);
        assert_eq!(tags(&pending), [3, 5]);
        pending.push(job(true, 6));
        let batch = take_batch(&mut pending, 1);
        assert_eq!(tags(&batch), [6]);
        assert_eq!(tags(&take_batch(&mut pending, 8)), [3, 5]);
        assert!(pending.is_empty());
    }
}
