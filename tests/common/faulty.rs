//! A real store with faults switched on from the test: the heartbeat panics on its Nth call from
//! arming, or claims are refused the way a database refuses a statement (a dropped table). Every
//! other call goes to the real store underneath.

use async_trait::async_trait;
use handover::model::Phase;
use handover::store::{
    CancelOutcome, ClaimedJob, CompletionRecord, DrainCost, DrainQueued, DrainRequest, FailOutcome,
    HeartbeatReport, Job, JobEvent, JobFilter, JobId, JobStatus, Lease, NewJob, QueuedDrain,
    ReleaseReason, RetryOutcome, SharedStore, ShutdownRecord, Store, StoreError, StoreResult,
    Subscription, WorkerRegistration, WorkerRow,
};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct FaultyStore {
    inner: SharedStore,
    heartbeats: AtomicUsize,
    /// The heartbeat call (counted from the first) that panics; 0 for none.
    panic_at: AtomicUsize,
    refuse_claims: AtomicBool,
}

impl FaultyStore {
    pub fn new(inner: SharedStore) -> FaultyStore {
        FaultyStore {
            inner,
            heartbeats: AtomicUsize::new(0),
            panic_at: AtomicUsize::new(0),
            refuse_claims: AtomicBool::new(false),
        }
    }

    /// The `n`th heartbeat from now panics.
    pub fn panic_on_heartbeat(&self, n: usize) {
        let so_far = self.heartbeats.load(Ordering::SeqCst);
        self.panic_at.store(so_far + n, Ordering::SeqCst);
    }

    /// Every claim from now on is refused with the error a dropped table gives.
    pub fn refuse_claims(&self) {
        self.refuse_claims.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn submit(&self, jobs: &[NewJob]) -> StoreResult<Vec<JobId>> {
        self.inner.submit(jobs).await
    }
    async fn claim(
        &self,
        owner: &str,
        kinds: &[String],
        limit: usize,
        lease_ttl: Duration,
    ) -> StoreResult<Vec<ClaimedJob>> {
        if self.refuse_claims.load(Ordering::SeqCst) {
            return Err(StoreError::Database(
                "relation \"jobs\" does not exist".into(),
            ));
        }
        self.inner.claim(owner, kinds, limit, lease_ttl).await
    }
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Value) -> StoreResult<()> {
        self.inner.checkpoint(lease, checkpoint).await
    }
    async fn complete(&self, items: &[(Lease, Value)]) -> StoreResult<Vec<bool>> {
        self.inner.complete(items).await
    }
    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        backoff: Duration,
    ) -> StoreResult<FailOutcome> {
        self.inner.fail(lease, error, backoff).await
    }
    async fn release(
        &self,
        leases: &[Lease],
        resume_after: Duration,
        reason: ReleaseReason,
    ) -> StoreResult<Vec<bool>> {
        self.inner.release(leases, resume_after, reason).await
    }
    async fn cancel(&self, ids: &[JobId]) -> StoreResult<Vec<CancelOutcome>> {
        self.inner.cancel(ids).await
    }
    async fn finish_cancelled(&self, lease: &Lease) -> StoreResult<bool> {
        self.inner.finish_cancelled(lease).await
    }
    async fn cancels_requested(&self, owner: &str) -> StoreResult<Vec<Lease>> {
        self.inner.cancels_requested(owner).await
    }
    async fn retry(&self, ids: &[JobId], from_scratch: bool) -> StoreResult<Vec<RetryOutcome>> {
        self.inner.retry(ids, from_scratch).await
    }
    async fn job_history(&self, id: JobId) -> StoreResult<(Vec<JobEvent>, Vec<CompletionRecord>)> {
        self.inner.job_history(id).await
    }
    async fn served_kinds(&self) -> StoreResult<Vec<String>> {
        self.inner.served_kinds().await
    }
    async fn page_jobs(&self, query: &handover::store::JobPageQuery) -> StoreResult<Vec<Job>> {
        self.inner.page_jobs(query).await
    }
    async fn drain_requested(&self, worker_id: &str) -> StoreResult<bool> {
        self.inner.drain_requested(worker_id).await
    }
    async fn queue_counts(&self) -> StoreResult<Vec<handover::model::QueueCount>> {
        self.inner.queue_counts().await
    }
    async fn rescue_expired(&self) -> StoreResult<Vec<JobId>> {
        self.inner.rescue_expired().await
    }
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.inner.get_job(id).await
    }
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        self.inner.list_jobs(filter).await
    }
    async fn count_jobs(&self) -> StoreResult<Vec<(JobStatus, i64)>> {
        self.inner.count_jobs().await
    }
    async fn register_worker(&self, worker: &WorkerRegistration) -> StoreResult<()> {
        self.inner.register_worker(worker).await
    }
    async fn revive_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.inner.revive_worker(worker_id).await
    }
    async fn set_worker_phase(&self, worker_id: &str, phase: Phase) -> StoreResult<()> {
        self.inner.set_worker_phase(worker_id, phase).await
    }
    async fn heartbeat(
        &self,
        worker_id: &str,
        held: &[Lease],
        lease_ttl: Duration,
        cost: DrainCost,
    ) -> StoreResult<HeartbeatReport> {
        let this = self.heartbeats.fetch_add(1, Ordering::SeqCst) + 1;
        if this == self.panic_at.load(Ordering::SeqCst) {
            panic!("injected fault: heartbeat {this} panics");
        }
        self.inner.heartbeat(worker_id, held, lease_ttl, cost).await
    }
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.inner.deregister_worker(worker_id).await
    }
    async fn list_workers(&self) -> StoreResult<Vec<WorkerRow>> {
        self.inner.list_workers().await
    }
    async fn request_drain(&self, worker: &str, request: &DrainRequest) -> StoreResult<WorkerRow> {
        self.inner.request_drain(worker, request).await
    }
    async fn queue_drains(
        &self,
        worker_ids: &[String],
        request: &DrainRequest,
        max_draining: u32,
    ) -> StoreResult<Vec<(String, DrainQueued)>> {
        self.inner
            .queue_drains(worker_ids, request, max_draining)
            .await
    }
    async fn promote_drains(&self) -> StoreResult<Vec<String>> {
        self.inner.promote_drains().await
    }
    async fn cancel_queued_drains(&self, worker_ids: &[String]) -> StoreResult<Vec<String>> {
        self.inner.cancel_queued_drains(worker_ids).await
    }
    async fn queued_drains(&self) -> StoreResult<Vec<QueuedDrain>> {
        self.inner.queued_drains().await
    }
    async fn record_shutdown(&self, record: &ShutdownRecord) -> StoreResult<()> {
        self.inner.record_shutdown(record).await
    }
    async fn list_shutdowns(&self, limit: i64) -> StoreResult<Vec<ShutdownRecord>> {
        self.inner.list_shutdowns(limit).await
    }
    async fn completion_counts(&self) -> StoreResult<Vec<(JobId, i64)>> {
        self.inner.completion_counts().await
    }
    async fn subscribe(&self, stop: CancellationToken) -> StoreResult<Option<Subscription>> {
        self.inner.subscribe(stop).await
    }
}
