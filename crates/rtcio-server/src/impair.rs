//! A network-impairment layer for the embedded TURN relay: a bandwidth cap with a bounded
//! queue, one-way delay and jitter, random loss and periodic loss bursts, changing on a
//! schedule. It exists for tests and benchmarks (`rtcio-server --turn-impair …`): relay-only
//! calls through it see the same link whatever the two ends are (Rust or Chromium), which the
//! kernel here cannot provide (no netem).
//!
//! Plain and clock-injected: [`Link::on_packet`] takes "now" and says when the packet leaves,
//! or that it is dropped; the relay does the waiting.

use std::time::Duration;

/// Periodic loss bursts: from `offset` on, every `every`, `length` long, each packet lost with
/// probability `loss`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLoss {
    /// Period.
    pub every: Duration,
    /// Length of each burst.
    pub length: Duration,
    /// Loss probability inside a burst (0–1).
    pub loss: f64,
    /// Start of the first burst, from the link's start.
    pub offset: Duration,
}

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkProfile {
    /// Bottleneck rate, bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// Longest queueing delay before the bottleneck drops (tail drop); default 200 ms.
    pub queue: Option<Duration>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Uniform extra delay in 0..=jitter per packet (packets may be reordered, as on a real
    /// path with jitter).
    pub jitter: Duration,
    /// Random loss probability (0–1).
    pub loss: f64,
    /// Periodic loss bursts.
    pub burst: Option<BurstLoss>,
}

/// Queue limit when none is given.
const DEFAULT_QUEUE: Duration = Duration::from_millis(200);

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it at this time (from the link's start).
    SendAt(Duration),
    /// Lost (random or burst loss).
    Lost,
    /// Dropped because the bottleneck queue is full.
    QueueFull,
}

/// Profiles that take effect at given times (from the link's start), e.g. 4 Mbit/s, then
/// 600 kbit/s from 20 s on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    steps: Vec<(Duration, LinkProfile)>,
}

impl Schedule {
    /// A profile for the whole time.
    pub fn constant(profile: LinkProfile) -> Self {
        Schedule {
            steps: vec![(Duration::ZERO, profile)],
        }
    }

    /// Adds a step (kept in time order).
    pub fn then_at(mut self, at: Duration, profile: LinkProfile) -> Self {
        self.steps.push((at, profile));
        self.steps.sort_by_key(|(t, _)| *t);
        self
    }

    /// The profile in force at `t` (no impairment before the first step).
    pub fn at(&self, t: Duration) -> LinkProfile {
        self.steps
            .iter()
            .rev()
            .find(|(start, _)| *start <= t)
            .map(|(_, p)| *p)
            .unwrap_or_default()
    }

    /// True when no step impairs anything.
    pub fn is_empty(&self) -> bool {
        self.steps.iter().all(|(_, p)| *p == LinkProfile::default())
    }

    /// Parses command-line steps, each `[T:]key=value,…` with keys `rate` (bit/s; `k`/`M`
    /// suffixes), `queue`, `delay`, `jitter` (ms or s), `loss` (percent), `burst`
    /// (`LOSS%/LENGTH/EVERY[/OFFSET]`); `T` is when the step starts (e.g. `20s:rate=600k`).
    pub fn parse(specs: &[String]) -> Result<Schedule, String> {
        let mut s = Schedule::default();
        for spec in specs {
            let (at, body) = match spec.split_once(':') {
                Some((t, rest)) if !t.contains('=') => (parse_duration(t)?, rest),
                _ => (Duration::ZERO, spec.as_str()),
            };
            s = s.then_at(at, parse_profile(body)?);
        }
        Ok(s)
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (num, unit) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        (v, 0.001)
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a duration (e.g. 40ms, 2s)"))?;
    if !x.is_finite() || x < 0.0 || x * unit > 86_400.0 {
        return Err(format!("{v:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(x * unit))
}

fn parse_percent(v: &str) -> Result<f64, String> {
    let x: f64 = v
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{v:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&x) {
        return Err(format!("{v:?} is not within 0-100 %"));
    }
    Ok(x / 100.0)
}

fn parse_rate(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (num, mul) = match v.chars().last() {
        Some('k' | 'K') => (&v[..v.len() - 1], 1e3),
        Some('M' | 'm') => (&v[..v.len() - 1], 1e6),
        Some('G' | 'g') => (&v[..v.len() - 1], 1e9),
        _ => (v, 1.0),
    };
    let x: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a rate (e.g. 600k, 4M)"))?;
    if !x.is_finite() || x * mul < 1000.0 || x * mul > 1e11 {
        return Err(format!("{v:?} is out of range (1k-100G)"));
    }
    Ok((x * mul) as u64)
}

fn parse_profile(body: &str) -> Result<LinkProfile, String> {
    let mut p = LinkProfile::default();
    for kv in body.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not key=value"))?;
        match k.trim() {
            "rate" => p.rate_bps = Some(parse_rate(v)?),
            "queue" => p.queue = Some(parse_duration(v)?),
            "delay" => p.delay = parse_duration(v)?,
            "jitter" => p.jitter = parse_duration(v)?,
            "loss" => p.loss = parse_percent(v)?,
            "burst" => {
                let parts: Vec<&str> = v.split('/').collect();
                if !(3..=4).contains(&parts.len()) {
                    return Err(format!("burst {v:?} is not LOSS%/LENGTH/EVERY[/OFFSET]"));
                }
                let b = BurstLoss {
                    loss: parse_percent(parts[0])?,
                    length: parse_duration(parts[1])?,
                    every: parse_duration(parts[2])?,
                    offset: match parts.get(3) {
                        Some(o) => parse_duration(o)?,
                        None => Duration::ZERO,
                    },
                };
                if b.every.is_zero() || b.length > b.every {
                    return Err(format!("burst {v:?}: LENGTH must be within EVERY (> 0)"));
                }
                p.burst = Some(b);
            }
            other => return Err(format!("unknown impairment key {other:?}")),
        }
    }
    Ok(p)
}

/// One direction of an impaired link: its bottleneck queue and random state.
#[derive(Debug, Clone)]
pub struct Link {
    schedule: Schedule,
    /// When the bottleneck is free again (from the link's start).
    busy_until: Duration,
    rng: u64,
}

impl Link {
    /// A link following `schedule`; `seed` makes its losses reproducible.
    pub fn new(schedule: Schedule, seed: u64) -> Self {
        Link {
            schedule,
            busy_until: Duration::ZERO,
            rng: seed | 1,
        }
    }

    fn uniform(&mut self) -> f64 {
        // xorshift64*: plenty for loss decisions.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fate of a `len`-byte packet offered at `now` (from the link's start).
    pub fn on_packet(&mut self, now: Duration, len: usize) -> Verdict {
        let p = self.schedule.at(now);
        let in_burst = p.burst.is_some_and(|b| {
            now >= b.offset
                && (now - b.offset).as_nanos() % b.every.as_nanos() < b.length.as_nanos()
        });
        let loss = match (in_burst, p.burst) {
            (true, Some(b)) => b.loss.max(p.loss),
            _ => p.loss,
        };
        // Draw every time, so one profile's losses do not depend on another's.
        let draw = self.uniform();
        let jitter_draw = self.uniform();
        let mut leave = now;
        if let Some(rate) = p.rate_bps {
            let start = self.busy_until.max(now);
            if start - now > p.queue.unwrap_or(DEFAULT_QUEUE) {
                return Verdict::QueueFull;
            }
            let serialise = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.busy_until = start + serialise;
            leave = self.busy_until;
        }
        // Lost on the path after the bottleneck (it still took its share of the rate).
        if draw < loss {
            return Verdict::Lost;
        }
        Verdict::SendAt(leave + p.delay + p.jitter.mul_f64(jitter_draw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn unimpaired_packets_leave_at_once() {
        let mut l = Link::new(Schedule::default(), 1);
        assert_eq!(l.on_packet(ms(5), 1200), Verdict::SendAt(ms(5)));
        assert!(Schedule::default().is_empty());
    }

    #[test]
    fn rate_cap_spaces_packets_and_drops_past_the_queue() {
        // 1 Mbit/s: 1250-byte packets take 10 ms each; queue 50 ms.
        let p = LinkProfile {
            rate_bps: Some(1_000_000),
            queue: Some(ms(50)),
            ..Default::default()
        };
        let mut l = Link::new(Schedule::constant(p), 1);
        let mut sent = Vec::new();
        let mut full = 0;
        for _ in 0..10 {
            match l.on_packet(ms(0), 1250) {
                Verdict::SendAt(t) => sent.push(t),
                Verdict::QueueFull => full += 1,
                Verdict::Lost => panic!("no loss configured"),
            }
        }
        assert_eq!(sent, (1..=6).map(|i| ms(10 * i)).collect::<Vec<_>>());
        assert_eq!(full, 4);
        // Later, the queue has drained.
        assert_eq!(l.on_packet(ms(100), 1250), Verdict::SendAt(ms(110)));
    }

    #[test]
    fn delay_and_jitter_bound_the_departure() {
        let p = LinkProfile {
            delay: ms(40),
            jitter: ms(10),
            ..Default::default()
        };
        let mut l = Link::new(Schedule::constant(p), 7);
        let mut min = Duration::MAX;
        let mut max = Duration::ZERO;
        for i in 0..1000 {
            let Verdict::SendAt(t) = l.on_packet(ms(i), 100) else {
                panic!("no loss configured");
            };
            let d = t - ms(i);
            min = min.min(d);
            max = max.max(d);
        }
        assert!(min >= ms(40) && max <= ms(50), "{min:?}..{max:?}");
        assert!(max - min > ms(8), "jitter should spread: {min:?}..{max:?}");
    }

    #[test]
    fn random_loss_matches_its_rate() {
        let p = LinkProfile {
            loss: 0.03,
            ..Default::default()
        };
        let mut l = Link::new(Schedule::constant(p), 42);
        let lost = (0..100_000)
            .filter(|i| l.on_packet(ms(*i), 100) == Verdict::Lost)
            .count();
        assert!((2_700..3_300).contains(&lost), "{lost}");
    }

    #[test]
    fn bursts_lose_only_inside_their_windows() {
        let p = LinkProfile {
            burst: Some(BurstLoss {
                every: Duration::from_secs(10),
                length: Duration::from_secs(1),
                loss: 1.0,
                offset: Duration::from_secs(5),
            }),
            ..Default::default()
        };
        let mut l = Link::new(Schedule::constant(p), 3);
        assert!(matches!(l.on_packet(ms(4_999), 1), Verdict::SendAt(_)));
        assert_eq!(l.on_packet(ms(5_000), 1), Verdict::Lost);
        assert_eq!(l.on_packet(ms(5_999), 1), Verdict::Lost);
        assert!(matches!(l.on_packet(ms(6_000), 1), Verdict::SendAt(_)));
        assert_eq!(l.on_packet(ms(15_500), 1), Verdict::Lost);
    }

    #[test]
    fn schedules_switch_profiles_and_parse_from_flags() {
        let s = Schedule::parse(&[
            "rate=4M,delay=20ms".to_string(),
            "20s:rate=600k,loss=1%,burst=30%/1s/10s".to_string(),
        ])
        .unwrap();
        assert_eq!(s.at(ms(0)).rate_bps, Some(4_000_000));
        assert_eq!(s.at(ms(0)).delay, ms(20));
        let later = s.at(Duration::from_secs(25));
        assert_eq!(later.rate_bps, Some(600_000));
        assert!((later.loss - 0.01).abs() < 1e-9);
        assert_eq!(later.burst.map(|b| b.length), Some(Duration::from_secs(1)));
        assert!(!s.is_empty());
        for bad in [
            "rate=fast",
            "loss=150%",
            "nope=1",
            "delay",
            "burst=30%/2s/1s",
            "rate=1",
            "delay=-5ms",
        ] {
            assert!(Schedule::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
