//! The consume loop: Kafka → decode → re-check → enrich → batch → one INSERT
//! per flush → store offsets only after ClickHouse accepted the batch
//! (rust-rdkafka's at-least-once pattern: `enable.auto.offset.store=false`,
//! stored offsets committed by librdkafka and after every flush).
//!
//! While an INSERT fails it is retried; the next batch waits for it (it is
//! written only after the one before ended), and the loop consumes no more
//! than the batch after that, so memory stays bounded by three batches.
//! Duplicates — redelivery after a crash or a rebalance, client retries —
//! are removed by event_id downstream, as long as one member at a time
//! writes a partition's messages: at a rebalance the INSERTs under way are
//! finished and the batch being filled is dropped before the partitions
//! change hands (`handover.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ensemble_core::event::recheck;
use ensemble_core::event::EventMessage;
use ensemble_core::kafka::{PartitionLag, PartitionState};
use ensemble_core::{ledger, Campaigns, EventRow, Shutdown};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;

use crate::batcher::{Batch, BatchLimits, Source};
use crate::chain::{self, Link, Publisher};
use crate::dlq::{DeadLetters, Origin};
use crate::enrich::Enricher;
use crate::handover::{self, EventsConsumer, Inflight};
use crate::metrics::Metrics;
use crate::sink;

pub struct Pipeline {
    pub consumer: Arc<EventsConsumer>,
    /// The events topic (every row's source).
    pub topic: Arc<str>,
    /// The campaigns served and, same order, the client of each one's
    /// database.
    pub campaigns: Campaigns,
    pub clients: Arc<[clickhouse::Client]>,
    /// Each database's visitors' histories, kept between batches
    /// (`ensemble_core::ledger::Histories`), same order.
    pub histories: Arc<[ledger::Histories]>,
    pub enricher: Enricher,
    pub dead_letters: DeadLetters,
    pub metrics: Metrics,
    pub limits: BatchLimits,
    pub insert_retry_max: Duration,
    /// Set by the membership watchdog: leave and rejoin the group.
    pub rejoin: Arc<AtomicBool>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Runs until `shutdown`: then inserts what it holds (if ClickHouse takes
    /// it), stores and commits those offsets, and returns.
    ///
    /// Two INSERT tasks may run while the next batch fills — one writing,
    /// the next one reading and computing meanwhile (`chain.rs`); the loop
    /// waits for the older before starting a third, so batches land — and
    /// their offsets are stored — in order, and memory holds at most three
    /// batches.
    pub async fn run(self, shutdown: Shutdown) {
        let mut batch = Batch::default();
        let handover = self.consumer.context().clone();
        // Partitions with a batch given up: no later offset of theirs is
        // stored (it would skip that batch's messages) until they are revoked.
        let mut abandoned = Abandoned::default();
        loop {
            let wait = if handover.busy() {
                // Look at the insert under way soon: its offsets are stored once it is done.
                Duration::from_millis(20).min(batch.time_left(&self.limits, Instant::now()))
            } else if batch.is_empty() {
                Duration::from_secs(1)
            } else {
                batch.time_left(&self.limits, Instant::now())
            };
            let received = tokio::select! {
                _ = shutdown.wait() => break,
                received = tokio::time::timeout(wait, self.consumer.recv()) => received,
            };
            // A rebalance runs inside `recv`: what it revoked leaves the
            // batch before the message received (of the new assignment) joins it.
            self.drop_revoked(handover.take_revoked(), &mut batch, &mut abandoned);
            match received {
                Err(_idle) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Ok(m)) => self.handle(&m, &mut batch).await,
            }
            while handover.finished() {
                self.finish(handover.take(), &mut abandoned).await;
            }
            if batch.is_due(&self.limits, Instant::now()) {
                // One batch writing, the next one preparing (`chain.rs`):
                // a third waits for the first to end.
                self.finish(
                    handover.take_if_at_least(handover::MAX_INFLIGHT),
                    &mut abandoned,
                )
                .await;
                let before = handover.newest();
                handover.put(self.start_insert(std::mem::take(&mut batch), &shutdown, before));
            }
            if self.rejoin.swap(false, Ordering::Relaxed) {
                // Everything handled so far is written and committed first:
                // the next owner of these partitions starts after it.
                self.finish_all(&handover, &mut abandoned).await;
                let last = self.start_insert(std::mem::take(&mut batch), &shutdown, None);
                self.finish(Some(last), &mut abandoned).await;
                if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "commit before rejoining (nothing stored)");
                }
                self.consumer.unsubscribe();
                forget_histories(&self.histories);
                if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
                    tracing::error!(error = %e, "cannot subscribe again after leaving the group; retrying");
                    self.rejoin.store(true, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } else {
                    self.metrics.rejoins.inc();
                    tracing::info!("left and rejoined the consumer group");
                }
            }
        }
        self.finish_all(&handover, &mut abandoned).await;
        let last = self.start_insert(batch, &shutdown, None);
        self.finish(Some(last), &mut abandoned).await;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit (nothing stored, or partitions revoked)");
        }
        tracing::info!("consume loop stopped");
    }

    async fn handle(&self, m: &BorrowedMessage<'_>, batch: &mut Batch) {
        self.metrics.consumed.inc();
        let payload = m.payload().unwrap_or_default();
        let decoded = EventMessage::decode(payload)
            .map_err(|e| (e.code(), e.to_string()))
            .and_then(|msg| recheck(&msg).map(|()| msg));
        match decoded {
            Ok(mut msg) => {
                // The collector redacts; this also covers messages from an
                // older or foreign producer.
                for f in ensemble_model::redact::redact_message(&mut msg) {
                    self.metrics
                        .values_redacted
                        .with_label_values(&[f.as_str()])
                        .inc();
                }
                let site = self.campaigns.owner(msg.ts, msg.placement.as_deref());
                let enrichment = self.enricher.enrich(self.campaigns.get(site), &msg);
                let source = Source {
                    site,
                    topic: self.topic.clone(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                };
                batch.push(
                    EventRow::new(&msg, enrichment, Utc::now()),
                    source,
                    &self.limits,
                );
            }
            Err((reason, detail)) => {
                let from = Origin {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                };
                dead_letter(
                    &self.dead_letters,
                    &self.metrics,
                    m.key(),
                    payload,
                    reason,
                    &detail,
                    from,
                )
                .await;
            }
        }
        batch.handled(m.topic(), m.partition(), m.offset());
    }

    /// Starts the INSERT of `batch`; the task gives the batch back — `Ok`
    /// once ClickHouse accepted it and the rows it refused are
    /// dead-lettered, `Err` if it gave up while ClickHouse failed (shutdown,
    /// or its partitions revoked: `give_up`, a child of `shutdown`), this
    /// member lost its partitions, or the batch `before` it gave up.
    ///
    /// With `before` (the INSERT under way), this one reads and computes
    /// while that one writes, and writes once it ended (`chain.rs`).
    fn start_insert(&self, batch: Batch, shutdown: &Shutdown, before: Option<Link>) -> Inflight {
        let (publish, link) = chain::link();
        let give_up = shutdown.child();
        let (clients, histories, campaigns, metrics, max, dead_letters, consumer, stop) = (
            self.clients.clone(),
            self.histories.clone(),
            self.campaigns.clone(),
            self.metrics.clone(),
            self.insert_retry_max,
            self.dead_letters.clone(),
            self.consumer.clone(),
            give_up.clone(),
        );
        let task = tokio::spawn(async move {
            let outcome = write_batch(
                batch,
                (&clients, &histories, &campaigns),
                (&metrics, max, &dead_letters),
                (&consumer, &stop),
                (before, &publish),
            )
            .await;
            if outcome.is_err() {
                // Given up: what it wrote is uncertain, and the batches
                // after it give up too. Forgotten before they hear of it.
                forget_histories(&histories);
            }
            publish.done(outcome.is_ok());
            outcome
        });
        Inflight {
            task,
            give_up,
            link,
        }
    }

    /// After partitions were revoked: what the batch being filled holds of
    /// them is dropped — none of it is written, and those messages are read
    /// again from the committed offsets by whoever owns them now — and their
    /// offsets may be stored again (a partition assigned anew starts from its
    /// committed offset).
    fn drop_revoked(
        &self,
        revoked: Vec<(String, i32)>,
        batch: &mut Batch,
        abandoned: &mut Abandoned,
    ) {
        if revoked.is_empty() {
            return;
        }
        // Their visitors are the next owner's to write now.
        forget_histories(&self.histories);
        let dropped = batch.forget(&revoked);
        self.metrics
            .revoked_rows_dropped
            .inc_by(u64::try_from(dropped).unwrap_or(u64::MAX));
        if dropped > 0 {
            tracing::info!(
                rows = dropped,
                "partitions revoked: their rows in the batch being filled are dropped and read again"
            );
        }
        abandoned.partitions.retain(|p| !revoked.contains(p));
    }

    /// Waits for every INSERT under way, oldest first, storing their offsets.
    async fn finish_all(&self, handover: &handover::Handover, abandoned: &mut Abandoned) {
        while let Some(inflight) = handover.take() {
            self.finish(Some(inflight), abandoned).await;
        }
    }

    /// Waits for an INSERT and stores its batch's offsets. Once a batch is
    /// given up, no later offset of its partitions is stored (that would
    /// skip its messages) until they are revoked.
    async fn finish(&self, inflight: Option<Inflight>, abandoned: &mut Abandoned) {
        let Some(inflight) = inflight else { return };
        let batch = match inflight.task.await {
            Ok(Ok(batch)) => batch,
            Ok(Err(given_up)) => {
                abandoned
                    .partitions
                    .extend(given_up.partitions().map(|(t, p)| (t.to_owned(), p)));
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "insert task failed; no offset is stored from now on");
                abandoned.all = true;
                return;
            }
        };
        for (topic, partition, offset) in batch.offsets() {
            if abandoned.holds(topic, partition) {
                continue;
            }
            // rd_kafka_offset_store stores offset + 1: the next message to read.
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                // The partition was revoked meanwhile: its new owner reads
                // these messages again, and duplicates are removed by event_id.
                tracing::info!(error = %e, topic, partition, "offset not stored (partition no longer assigned)");
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!(error = %e, "async commit not started");
        }
    }
}

/// Partitions whose offsets must not move: a batch of theirs was given up
/// (`all`: an INSERT task panicked, its batch is unknown).
#[derive(Debug, Default)]
struct Abandoned {
    partitions: std::collections::BTreeSet<(String, i32)>,
    all: bool,
}

impl Abandoned {
    fn holds(&self, topic: &str, partition: i32) -> bool {
        self.all || self.partitions.contains(&(topic.to_owned(), partition))
    }
}

/// Forgets every database's kept histories: the next batches read the
/// ledger (see `ensemble_core::ledger::Histories`).
fn forget_histories(histories: &[ledger::Histories]) {
    histories.iter().for_each(ledger::Histories::clear);
}

/// The task of [`Pipeline::start_insert`]: each campaign's rows into its
/// database, the refused ones dead-lettered; the batch back, `Err` when
/// given up.
async fn write_batch(
    batch: Batch,
    (clients, histories, campaigns): (&[clickhouse::Client], &[ledger::Histories], &Campaigns),
    (metrics, max, dead_letters): (&Metrics, Duration, &DeadLetters),
    (consumer, stop): (&EventsConsumer, &Shutdown),
    (before, publish): (Option<Link>, &Publisher),
) -> Result<Batch, Batch> {
    if batch.rows.is_empty() {
        // Nothing to hand over; the batch before still ends first.
        publish.serial();
        let ended_well = match before {
            Some(mut b) => b.ended_well().await,
            None => true,
        };
        return if ended_well { Ok(batch) } else { Err(batch) };
    }
    let owner = || !consumer.assignment_lost();
    // Each campaign's rows into its own database, one after the
    // other; the offsets move once every one has its rows (a batch
    // given up half-way is read again, and each database's ledger
    // drops what it already counted).
    let mut refused = Vec::new();
    let mut batch = batch;
    let sites = by_site(&batch);
    // Several databases: nothing handed over, and nothing read before
    // the batch before ended.
    let mut chain = (before, Some(publish));
    if sites.len() != 1 {
        publish.serial();
        chain.1 = None;
        if let Some(mut b) = chain.0.take() {
            if !b.ended_well().await {
                return Err(batch);
            }
        }
    }
    for (site, rows) in sites {
        // Shared with the events' INSERT task (see `sink::insert`),
        // then given back to the batch.
        let whole = rows.is_none();
        let shared = Arc::new(match &rows {
            None => std::mem::take(&mut batch.rows),
            Some(indices) => indices.iter().map(|&i| batch.rows[i].clone()).collect(),
        });
        let inserted = sink::insert(
            (&clients[site], &histories[site]),
            (campaigns.get(site), site),
            &shared,
            max,
            metrics,
            (stop, &owner),
            (chain.0.take(), chain.1),
        )
        .await;
        if whole {
            batch.rows = Arc::try_unwrap(shared).unwrap_or_else(|a| a.as_ref().clone());
        }
        match inserted {
            Ok(r) => refused.extend(r.into_iter().map(|mut r| {
                if let Some(indices) = &rows {
                    r.index = indices[r.index];
                }
                r
            })),
            Err(e) => {
                // Not counted: its offsets are not stored; the messages come again.
                tracing::warn!(error = %e, rows = batch.len(), "batch abandoned");
                return Err(batch);
            }
        }
    }
    refused.sort_by_key(|r| r.index);
    // The offsets move only once every refused row is safe in the
    // dead-letter topic (send waits for Kafka's confirmation).
    for r in &refused {
        let s = &batch.sources[r.index];
        let from = Origin {
            topic: &s.topic,
            partition: s.partition,
            offset: s.offset,
        };
        dead_letter(
            dead_letters,
            metrics,
            s.key.as_deref(),
            &s.payload,
            "refused_by_store",
            &r.detail,
            from,
        )
        .await;
    }
    let now = Utc::now();
    let mut refused = refused.iter().map(|r| r.index).peekable();
    for (i, r) in batch.rows.iter().enumerate() {
        if refused.next_if_eq(&i).is_some() {
            continue;
        }
        let event_delay = (now - r.ts).num_milliseconds().max(0) as f64 / 1000.0;
        let ingest_delay = (now - r.received_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics
            .delay
            .with_label_values(&["event"])
            .observe(event_delay);
        metrics
            .delay
            .with_label_values(&["ingest"])
            .observe(ingest_delay);
    }
    Ok(batch)
}

/// Sends one message to the dead-letter topic (waiting for Kafka's
/// confirmation) and counts it by reason.
async fn dead_letter(
    dead_letters: &DeadLetters,
    metrics: &Metrics,
    key: Option<&[u8]>,
    payload: &[u8],
    reason: &'static str,
    detail: &str,
    from: Origin<'_>,
) {
    tracing::warn!(
        reason,
        detail,
        partition = from.partition,
        offset = from.offset,
        "dead-lettering a message"
    );
    dead_letters.send(key, payload, reason, detail, from).await;
    metrics.dead_lettered.with_label_values(&[reason]).inc();
}

/// Every `every`, for each partition assigned to this member: the lag gauge
/// (messages not committed), and the count of assigned partitions.
///
/// A committed offset past a partition's end usually means the broker lost
/// or reset its data: a consumer that fetches from there reads nothing
/// until new messages pass that offset, and skips them. It is reported
/// (`ensemble_processor_committed_ahead_of_end_messages`) and the partition
/// is rewound to its first offset: every message now in it is new to the
/// group (one seen before would be removed by event id). Unless the broker
/// still serves the group's last committed message: then it is the end it
/// reports that is wrong (tansu 0.6's in-memory storage), the lag is 0
/// past that message, a warning is logged and nothing is read again.
pub fn spawn_lag_probe(
    consumer: Arc<EventsConsumer>,
    brokers: String,
    metrics: Metrics,
    every: Duration,
    shutdown: Shutdown,
) {
    let brokers: Arc<str> = brokers.into();
    tokio::spawn(async move {
        // partition → the committed offset past the end it was last seen
        // at, and whether it was rewound from there (once per loss) or its
        // message found served after all (looked at once).
        let rewound = Arc::new(std::sync::Mutex::new(HashMap::<i32, (i64, bool)>::new()));
        loop {
            let (c, m, rewound, brokers) = (
                consumer.clone(),
                metrics.clone(),
                rewound.clone(),
                brokers.clone(),
            );
            let _ = tokio::task::spawn_blocking(move || {
                let Ok(committed) = c.committed(Duration::from_secs(5)) else {
                    return;
                };
                let Ok(mut rewound) = rewound.lock() else {
                    return;
                };
                // Only the partitions assigned now: a revoked partition's
                // last figure would otherwise stay, counted twice in the group.
                m.lag.reset();
                m.ahead_of_end.reset();
                m.assigned.set(committed.count() as i64);
                for e in committed.elements() {
                    let Ok((low, end)) =
                        c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                    else {
                        continue;
                    };
                    let mut lag = PartitionLag {
                        partition: e.partition(),
                        committed: e.offset().to_raw().filter(|o| *o >= 0),
                        low,
                        end,
                    };
                    let label = e.partition().to_string();
                    let Some(done) = lag.committed.filter(|_| lag.state() == PartitionState::AheadOfEnd)
                    else {
                        m.lag.with_label_values(&[&label]).set(lag.pending());
                        rewound.remove(&e.partition());
                        continue;
                    };
                    if rewound.get(&e.partition()) == Some(&(done, false)) {
                        m.lag.with_label_values(&[&label]).set(lag.pending());
                        m.ahead_of_end.with_label_values(&[&label]).set(done - end);
                        continue;
                    }
                    // The group's last message still served: the broker
                    // reports its end wrongly, no data was lost. Nothing is
                    // pending that the group knows of; nothing is read again.
                    let known = rewound.get(&e.partition()) == Some(&(done, true));
                    if known
                        || ensemble_core::kafka::message_exists(
                            &brokers,
                            (e.topic(), e.partition()),
                            (low, done - 1),
                            Duration::from_secs(5),
                        )
                    {
                        lag.end = done;
                        m.lag.with_label_values(&[&label]).set(lag.pending());
                        if known {
                            continue;
                        }
                        rewound.insert(e.partition(), (done, true));
                        m.end_reported_low.inc();
                        tracing::warn!(
                            partition = e.partition(),
                            committed = done,
                            reported_end = end,
                            "the broker reports a partition end below messages it still serves; not rewinding"
                        );
                        continue;
                    }
                    m.lag.with_label_values(&[&label]).set(lag.pending());
                    m.ahead_of_end.with_label_values(&[&label]).set(done - end);
                    tracing::error!(
                        partition = e.partition(),
                        committed = done,
                        end,
                        first = low,
                        "committed offset is past the partition's end (broker data lost or reset); rewinding to the first offset"
                    );
                    // The group's offset is set back too: librdkafka commits a
                    // stored offset only when it passes the committed one, so
                    // without this no progress here would ever be committed.
                    let mut back = rdkafka::TopicPartitionList::new();
                    let rewound_to = back
                        .add_partition_offset(e.topic(), e.partition(), Offset::Offset(low))
                        .and_then(|()| c.commit(&back, CommitMode::Sync))
                        .and_then(|()| {
                            c.seek(e.topic(), e.partition(), Offset::Offset(low), Duration::from_secs(5))
                        });
                    match rewound_to {
                        Ok(()) => {
                            m.rewinds.inc();
                            rewound.insert(e.partition(), (done, false));
                        }
                        Err(err) => tracing::warn!(error = %err, partition = e.partition(), "rewind failed; trying again"),
                    }
                }
            })
            .await;
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// The batch's rows by campaign: `None` when they all belong to one
/// (the whole batch, not copied), else the row indices of each.
fn by_site(batch: &Batch) -> Vec<(usize, Option<Vec<usize>>)> {
    let first = batch.sources.first().map_or(0, |s| s.site);
    if batch.sources.iter().all(|s| s.site == first) {
        return vec![(first, None)];
    }
    let mut out: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, s) in batch.sources.iter().enumerate() {
        out.entry(s.site).or_default().push(i);
    }
    out.into_iter()
        .map(|(site, rows)| (site, Some(rows)))
        .collect()
}
