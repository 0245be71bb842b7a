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
//! What this module does not decide yet: a job that can never fit (its request above
//! its queue's limits, or above the largest node) is to be refused at submission, not
//! left at the head of its queue, where it would hold the jobs behind it.

use std::collections::BTreeMap;

use jiff::Timestamp;

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

    fn plus(self, other: Self) -> Self {
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

/// A queue, as its operator defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub limits: Limits,
    /// The most of its admitted jobs whose pods are not yet running (backpressure to
    /// the scheduler); `None` is no limit.
    pub max_pending: Option<u32>,
    /// Its share of the limit across all queues, relative to the others' (at least 1).
    pub weight: u32,
    /// A paused queue admits nothing; what it holds runs on.
    pub paused: bool,
}

/// What a queue holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Its admitted, unfinished jobs.
    pub admitted: Resources,
    /// Of those, the ones whose pods are not yet running.
    pub pending: u32,
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
    /// What holds it, in words: "queue etl: 20 of 20 jobs running".
    pub reason: String,
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

/// Which of `waiting` to admit now. `queues` are the queues by name, `held` what each
/// holds now (a queue missing from it holds nothing), and `total` the limit across all
/// queues. A job whose queue does not exist waits, saying so.
pub fn admit(
    queues: &BTreeMap<String, Queue>,
    held: &BTreeMap<String, Held>,
    total: &Limits,
    waiting: &[Waiting],
) -> Plan {
    let mut lines: BTreeMap<&str, Vec<Waiting>> = BTreeMap::new();
    for job in waiting {
        lines.entry(job.queue.as_str()).or_default().push(job.clone());
    }
    for line in lines.values_mut() {
        in_order(line);
        line.reverse(); // the next job last, so it pops
    }
    let mut held: BTreeMap<&str, Held> =
        lines.keys().map(|name| (*name, held.get(*name).copied().unwrap_or_default())).collect();
    let all = |held: &BTreeMap<&str, Held>| held.values().fold(Resources::default(), |sum, h| sum.plus(h.admitted));
    let mut all_held = all(&held);
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
                    total.dominant_share(held[name].admitted) / f64::from(weight)
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
                if let Some((what, now, limit)) = queue.limits.passed_by(queue_held.admitted, job.request) {
                    Some(format!("queue {name}: {now} of {limit} {what} held"))
                } else if queue.max_pending.is_some_and(|max| queue_held.pending >= max) {
                    let max = queue.max_pending.unwrap_or_default();
                    Some(format!("queue {name}: {} of {max} admitted jobs not yet running", queue_held.pending))
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
                entry.admitted = entry.admitted.plus(job.request);
                entry.pending = entry.pending.saturating_add(1);
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
