//! Admission: which waiting jobs may start now, given each queue's limits, what each
//! queue already holds, and the limit across all queues. A pure function of its inputs,
//! like [`crate::reconcile::decide`]: whoever admits (dispatch when there is room, the
//! reconciler when room frees) asks it with the usage it read, and carries the answer
//! out with conditional writes.
//!
//! Order within a queue: higher priority first, then the oldest, then the job id (so
//! the order is total and every caller sees the same one). A queue's first waiting job
//! that does not fit holds the ones behind it: a large job is never overtaken for ever
//! by small ones of its own queue. Between queues competing for the limit across all
//! queues, the next job comes from the queue with the smallest weighted dominant share:
//! its largest fraction of any limited resource (jobs, CPU, memory) divided by its
//! weight, as Armada and AWS Batch share. Worked example: a limit of 40 CPUs; queue
//! `etl` (weight 1) holds 10 CPUs, queue `ml` (weight 3) holds 24; their shares are
//! 10/40 / 1 = 0.25 and 24/40 / 3 = 0.2, so `ml` is offered the next slot first, and
//! over a long spike `ml` holds about three times what `etl` holds.
//!
//! A job that can never fit ([`never_fits`]: its request above its queue's limits, the
//! limit across all queues, or the largest node) is refused at submission, never left
//! at the head of its queue, where it would hold the jobs behind it for ever.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::job::DEFAULT_QUEUE;

/// What a job, or a set of jobs, holds while admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub jobs: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    /// What one job requesting `cpu_millis` and `memory_bytes` holds.
    pub fn job(cpu_millis: u64, memory_bytes: u64) -> Self {
        Self { jobs: 1, cpu_millis, memory_bytes }
    }

    pub fn plus(self, other: Self) -> Self {
        Self {
            jobs: self.jobs.saturating_add(other.jobs),
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// Limits on what admitted, unfinished jobs may hold at once; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub jobs: Option<u32>,
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

impl Limits {
    /// The first limit `held` would pass if `more` were added, as (resource, held, limit)
    /// in the units a person reads.
    fn passed_by(&self, held: Resources, more: Resources) -> Option<(&'static str, String, String)> {
        let after = held.plus(more);
        if let Some(limit) = self.jobs.filter(|limit| after.jobs > *limit) {
            return Some(("jobs", held.jobs.to_string(), limit.to_string()));
        }
        if let Some(limit) = self.cpu_millis.filter(|limit| after.cpu_millis > *limit) {
            let show = crate::quantity::format_cpu;
            return Some(("CPU", show(held.cpu_millis), show(limit)));
        }
        if let Some(limit) = self.memory_bytes.filter(|limit| after.memory_bytes > *limit) {
            let show = crate::quantity::format_memory;
            return Some(("memory", show(held.memory_bytes), show(limit)));
        }
        None
    }

    /// The largest fraction of a limited resource that `held` takes (0 when nothing is
    /// limited).
    fn dominant_share(&self, held: Resources) -> f64 {
        let share = |held: f64, limit: Option<f64>| limit.filter(|l| *l > 0.0).map_or(0.0, |limit| held / limit);
        // Shares only compare with each other: a rounding in the 15th digit changes nothing.
        let shares = [
            share(f64::from(held.jobs), self.jobs.map(f64::from)),
            share(held.cpu_millis as f64, self.cpu_millis.map(|l| l as f64)),
            share(held.memory_bytes as f64, self.memory_bytes.map(|l| l as f64)),
        ];
        shares.into_iter().fold(0.0, f64::max)
    }
}

impl Limits {
    /// No limit on anything.
    pub const NONE: Self = Self { jobs: None, cpu_millis: None, memory_bytes: None };

    /// The limits in words: "20 jobs, 8 CPU, 32Gi", or "none".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(jobs) = self.jobs {
            parts.push(if jobs == 1 { "1 job".to_owned() } else { format!("{jobs} jobs") });
        }
        if let Some(cpu) = self.cpu_millis {
            parts.push(format!("{} CPU", crate::quantity::format_cpu(cpu)));
        }
        if let Some(memory) = self.memory_bytes {
            parts.push(format!("{} memory", crate::quantity::format_memory(memory)));
        }
        if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
    }
}

/// The weight of a queue no one gave one.
pub const DEFAULT_WEIGHT: u32 = 1;
/// The largest weight a queue may have (shares are ratios; this keeps them readable).
pub const MAX_WEIGHT: u32 = 1000;

/// A queue, as its operator defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub limits: Limits,
    /// Its share of the limit across all queues, relative to the others' (at least 1).
    pub weight: u32,
    /// A paused queue admits nothing; what it holds runs on.
    pub paused: bool,
    /// Fail an attempt that stays unschedulable past `unschedulable_after`, as before
    /// queues existed, instead of putting it back to wait for room.
    pub fail_unschedulable: bool,
}

impl Queue {
    /// A queue with no limits and the default weight.
    pub fn unlimited(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            limits: Limits::NONE,
            weight: DEFAULT_WEIGHT,
            paused: false,
            fail_unschedulable: false,
        }
    }
}

/// Every queue of a deployment, and the limit across all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    pub queues: BTreeMap<String, Queue>,
    /// What all queues' admitted jobs may hold together (what the cluster can grow to).
    pub total: Limits,
}

impl Queues {
    /// The queues as defined, with the `default` queue (no limits) when it is not.
    pub fn new(defined: impl IntoIterator<Item = Queue>, total: Limits) -> Self {
        let mut queues: BTreeMap<String, Queue> = defined.into_iter().map(|q| (q.name.clone(), q)).collect();
        queues.entry(DEFAULT_QUEUE.to_owned()).or_insert_with(|| Queue::unlimited(DEFAULT_QUEUE));
        Self { queues, total }
    }

    pub fn get(&self, name: &str) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// The queue names, for a message that lists them.
    pub fn names(&self) -> String {
        self.queues.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// An admitted job attempt's hold on its queue: what the queue's usage counts. Written
/// with the usage in one transaction, removed with it in another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub job_id: String,
    pub attempt: u32,
    pub queue: String,
    pub request: Resources,
}

impl Slot {
    /// The slot of `record`'s current attempt of `job`: in the job's queue, sized as the
    /// attempt runs ([`attempt_request`]). The one shape taking, giving back and adopting
    /// a slot all use.
    pub fn of(record: &crate::record::JobRecord, job: &crate::validate::Job) -> Self {
        Self {
            job_id: record.job_id.clone(),
            attempt: record.attempt,
            queue: job.queue.clone(),
            request: attempt_request(record, job),
        }
    }
}

/// What the record's current attempt of `job` requests: its CPU, and its memory as the
/// attempt runs it (grown after OOM kills, `Job::with_memory_after`). The one size the
/// plan, the slot and the pod all use.
pub fn attempt_request(record: &crate::record::JobRecord, job: &crate::validate::Job) -> Resources {
    let oom_kills = record
        .history
        .iter()
        .filter(|t| t.to == crate::state::JobState::Failed && t.reason == crate::observe::OOM_KILLED)
        .count();
    let attempt = job.with_memory_after(oom_kills);
    Resources::job(attempt.cpu_millis, attempt.memory_bytes)
}

/// What `slots` hold, per queue: the truth the stored usage must equal.
pub fn usage_of<'a>(slots: impl IntoIterator<Item = &'a Slot>) -> BTreeMap<String, Resources> {
    let mut usage: BTreeMap<String, Resources> = BTreeMap::new();
    for slot in slots {
        let held = usage.entry(slot.queue.clone()).or_default();
        *held = held.plus(slot.request);
    }
    usage
}

/// The largest node a pod may get: of the nodes the cluster has, and the configured
/// shape of the nodes an autoscaler may add, the most CPU and the most memory (each
/// may come from a different node; a job is only refused when no node could hold it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSize {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// Why a job requesting `request` can never be admitted in `queue`, if it cannot: its
/// request is over a limit of its queue or of all queues, or over the largest node.
/// Names both sizes.
pub fn never_fits(request: Resources, queue: &Queue, total: &Limits, largest: Option<NodeSize>) -> Option<String> {
    let show_cpu = crate::quantity::format_cpu;
    let show_memory = crate::quantity::format_memory;
    let over = |limits: &Limits, whose: &str| {
        if let Some(limit) = limits.cpu_millis.filter(|l| request.cpu_millis > *l) {
            return Some(format!(
                "it requests {} CPU and {whose} may hold at most {} CPU",
                show_cpu(request.cpu_millis),
                show_cpu(limit)
            ));
        }
        if let Some(limit) = limits.memory_bytes.filter(|l| request.memory_bytes > *l) {
            return Some(format!(
                "it requests {} of memory and {whose} may hold at most {}",
                show_memory(request.memory_bytes),
                show_memory(limit)
            ));
        }
        if limits.jobs == Some(0) {
            return Some(format!("{whose} may hold no jobs (a limit of 0)"));
        }
        None
    };
    over(&queue.limits, &format!("queue {}", queue.name)).or_else(|| over(total, "all queues together")).or_else(|| {
        let node = largest?;
        if request.cpu_millis > node.cpu_millis {
            Some(format!(
                "it requests {} CPU and the largest node the cluster has or can add has {} CPU",
                show_cpu(request.cpu_millis),
                show_cpu(node.cpu_millis)
            ))
        } else if request.memory_bytes > node.memory_bytes {
            Some(format!(
                "it requests {} of memory and the largest node the cluster has or can add has {}",
                show_memory(request.memory_bytes),
                show_memory(node.memory_bytes)
            ))
        } else {
            None
        }
    })
}

/// A job waiting for admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub job_id: String,
    pub queue: String,
    pub priority: i32,
    pub queued_at: Timestamp,
    pub request: Resources,
}

/// Why a job waits: the record's message while it is `queued` with reason `Waiting`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Its place in its queue's order (1 is next).
    pub position: usize,
    /// What holds it, in words: "queue etl: 20 of 20 jobs held".
    pub reason: String,
}

/// What kind of hold `reason` is, without its figures: two reasons of one kind ("queue
/// etl: 30Gi of 32Gi memory held", "… 31Gi of 32Gi …") need not be written twice.
pub fn hold_kind(reason: &str) -> String {
    reason.chars().filter(|c| !c.is_ascii_digit() && *c != '.').collect()
}

/// What to do now: the jobs to admit, in order, and why each other one waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub admit: Vec<String>,
    pub wait: BTreeMap<String, Hold>,
}

/// The order of waiting jobs within a queue.
pub fn in_order(waiting: &mut [Waiting]) {
    waiting.sort_by(|a, b| {
        b.priority.cmp(&a.priority).then(a.queued_at.cmp(&b.queued_at)).then_with(|| a.job_id.cmp(&b.job_id))
    });
}

/// Which of `waiting` to admit now. `queues` are the queues and the limit across all
/// of them, `held` what each queue's admitted, unfinished jobs hold now (a queue
/// missing from it holds nothing). A job whose queue does not exist waits, saying so.
pub fn admit(queues: &Queues, held: &BTreeMap<String, Resources>, waiting: &[Waiting]) -> Plan {
    let total = &queues.total;
    let mut lines: BTreeMap<&str, Vec<Waiting>> = BTreeMap::new();
    for job in waiting {
        lines.entry(job.queue.as_str()).or_default().push(job.clone());
    }
    for line in lines.values_mut() {
        in_order(line);
        line.reverse(); // the next job last, so it pops
    }
    // Every queue's holdings count against the limit across all queues, waiting jobs
    // or not.
    let mut all_held = held.values().fold(Resources::default(), |sum, h| sum.plus(*h));
    let mut held: BTreeMap<&str, Resources> =
        lines.keys().map(|name| (*name, held.get(*name).copied().unwrap_or_default())).collect();
    // Queues whose next job cannot be admitted this time, with why.
    let mut blocked: BTreeMap<&str, String> = BTreeMap::new();
    let mut plan = Plan::default();

    loop {
        // The open queue with the smallest weighted dominant share offers its next job.
        let next = lines
            .iter()
            .filter(|(name, line)| !line.is_empty() && !blocked.contains_key(*name))
            .map(|(name, _)| *name)
            .min_by(|a, b| {
                let share = |name: &str| {
                    let weight = queues.get(name).map_or(1, |q| q.weight.max(1));
                    total.dominant_share(held[name]) / f64::from(weight)
                };
                share(a).total_cmp(&share(b)).then(a.cmp(b))
            });
        let Some(name) = next else { break };
        let line = lines.get_mut(name).expect("a queue offered is one with a line");
        let job = line.last().expect("a queue offered has a waiting job");
        let queue_held = held[name];
        let why = match queues.get(name) {
            None => Some(format!("queue {name} does not exist")),
            Some(queue) if queue.paused => Some(format!("queue {name} is paused")),
            Some(queue) => {
                if let Some((what, now, limit)) = queue.limits.passed_by(queue_held, job.request) {
                    Some(format!("queue {name}: {now} of {limit} {what} held"))
                } else {
                    total
                        .passed_by(all_held, job.request)
                        .map(|(what, now, limit)| format!("all queues: {now} of {limit} {what} held"))
                }
            }
        };
        match why {
            Some(why) => {
                blocked.insert(name, why);
            }
            None => {
                let job = line.pop().expect("checked above");
                let entry = held.get_mut(name).expect("every queue with a line has its usage");
                *entry = entry.plus(job.request);
                all_held = all_held.plus(job.request);
                plan.admit.push(job.job_id);
            }
        }
    }

    for (name, line) in lines {
        let why = blocked.get(name).cloned().unwrap_or_default();
        for (place, job) in line.into_iter().rev().enumerate() {
            let reason = if place == 0 { why.clone() } else { format!("{place} ahead of it in queue {name}; {why}") };
            plan.wait.insert(job.job_id, Hold { position: place + 1, reason });
        }
    }
    plan
}
