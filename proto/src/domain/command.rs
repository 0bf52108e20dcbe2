//! Sweeps of the user's own command: the parameter space (grid and random samples), the command
//! template and how one job's command line is rendered from it, and the objective that ranks
//! epochs and jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Names a template may use besides the parameters: the job's own identity.
pub const JOB_FIELDS: [&str; 5] = ["seed", "job_id", "attempt", "epochs", "sweep"];
/// Most parameters a command sweep may have.
pub const MAX_PARAMS: usize = 32;
/// Most values one grid parameter (or choice) may list.
pub const MAX_PARAM_VALUES: usize = 1_000;
/// Most parameter points (grid × samples) one sweep may have.
pub const MAX_POINTS: usize = 10_000;
/// Longest parameter name, value, template and environment entry.
pub const MAX_PARAM_NAME_LEN: usize = 64;
pub const MAX_PARAM_VALUE_LEN: usize = 256;
pub const MAX_TEMPLATE_LEN: usize = 4_096;
/// Most named metrics one epoch may carry.
pub const MAX_METRICS: usize = 64;
/// Longest a job's label (its parameter point as text) may be.
pub const MAX_LABEL_LEN: usize = 1_024;

/// Which way the objective is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Direction {
    #[default]
    Max,
    Min,
}

/// The metric that ranks a job's epochs (its best) and a sweep's jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objective {
    pub metric: String,
    pub direction: Direction,
}

impl Default for Objective {
    fn default() -> Self {
        Objective { metric: "val_acc".into(), direction: Direction::Max }
    }
}

impl Objective {
    /// True when `a` is strictly better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.direction {
            Direction::Max => a > b,
            Direction::Min => a < b,
        }
    }
}

/// How a random-search parameter is drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Distribution {
    Uniform {
        low: f64,
        high: f64,
    },
    LogUniform {
        low: f64,
        high: f64,
    },
    /// Integers `low..=high`.
    IntUniform {
        low: i64,
        high: i64,
    },
    Choice(Vec<String>),
}

impl Distribution {
    /// The value drawn for uniform number `u` in [0, 1).
    fn draw(&self, u: f64) -> String {
        match self {
            Distribution::Uniform { low, high } => short_float(low + (high - low) * u),
            Distribution::LogUniform { low, high } => {
                short_float((low.ln() + (high.ln() - low.ln()) * u).exp())
            }
            Distribution::IntUniform { low, high } => {
                let span = (high - low) as f64 + 1.0;
                (low + ((u * span).floor() as i64).min(high - low)).to_string()
            }
            Distribution::Choice(values) => {
                values[((u * values.len() as f64) as usize).min(values.len() - 1)].clone()
            }
        }
    }
}

/// A float with 6 significant digits, as short as it prints ("0.000316228", "12.5").
fn short_float(x: f64) -> String {
    let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
    format!("{rounded}")
}

/// A validated command sweep (see `sweep.v1.CommandSpec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// The template as submitted.
    pub template: String,
    pub grid: BTreeMap<String, Vec<String>>,
    pub samples: u32,
    pub distributions: BTreeMap<String, Distribution>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: Option<u32>,
}

/// One point of a command sweep's parameter space: a value per parameter.
pub type ParamPoint = BTreeMap<String, String>;

impl CommandSpec {
    /// Every parameter point: the grid's combinations (in name order, last name fastest), each
    /// with every random sample. Samples are drawn from `sweep`'s name, so they never change.
    pub fn points(&self, sweep: &str) -> Vec<ParamPoint> {
        let mut grid: Vec<ParamPoint> = vec![BTreeMap::new()];
        for (name, values) in &self.grid {
            grid = grid
                .into_iter()
                .flat_map(|point| {
                    values.iter().map(move |v| {
                        let mut p = point.clone();
                        p.insert(name.clone(), v.clone());
                        p
                    })
                })
                .collect();
        }
        if self.samples == 0 || self.distributions.is_empty() {
            return grid;
        }
        let mut rng = SplitMix64(fnv1a(sweep.as_bytes()));
        let samples: Vec<ParamPoint> = (0..self.samples)
            .map(|_| self.distributions.iter().map(|(n, d)| (n.clone(), d.draw(rng.unit()))).collect())
            .collect();
        grid.iter()
            .flat_map(|g| {
                samples.iter().map(move |s| {
                    let mut p = g.clone();
                    p.extend(s.iter().map(|(k, v)| (k.clone(), v.clone())));
                    p
                })
            })
            .collect()
    }

    /// How many points [`CommandSpec::points`] yields, without building them (saturating).
    pub fn point_count(&self) -> usize {
        let grid = self.grid.values().fold(1usize, |n, v| n.saturating_mul(v.len()));
        if self.samples == 0 || self.distributions.is_empty() {
            grid
        } else {
            grid.saturating_mul(self.samples as usize)
        }
    }

    /// Every parameter name (grid and distributions).
    pub fn param_names(&self) -> impl Iterator<Item = &String> {
        self.grid.keys().chain(self.distributions.keys())
    }

    /// The command line of one job: the template's words with every `{name}` replaced.
    pub fn render(&self, point: &ParamPoint, job: &JobFields<'_>) -> Vec<String> {
        let words = split_words(&self.template).unwrap_or_default();
        words
            .iter()
            .map(|w| {
                substitute(w, &|name| point.get(name).cloned().or_else(|| job.get(name)))
                    .unwrap_or_else(|_| w.clone())
            })
            .collect()
    }
}

/// The job's own values a template may name ([`JOB_FIELDS`]).
#[derive(Debug, Clone, Copy)]
pub struct JobFields<'a> {
    pub seed: u64,
    pub job_id: i64,
    pub attempt: u32,
    pub epochs: u32,
    pub sweep: &'a str,
}

impl JobFields<'_> {
    fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "seed" => self.seed.to_string(),
            "job_id" => self.job_id.to_string(),
            "attempt" => self.attempt.to_string(),
            "epochs" => self.epochs.to_string(),
            "sweep" => self.sweep.to_owned(),
            _ => return None,
        })
    }
}

/// The label of a parameter point, as jobs are named in listings and reports: `a=1,b=x`
/// (names in order); `default` for the point of a sweep without parameters.
pub fn point_label(point: &ParamPoint) -> String {
    if point.is_empty() {
        return "default".into();
    }
    point.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The parameter point a label written by [`point_label`] names (`default`: none).
pub fn label_point(label: &str) -> ParamPoint {
    label.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Splits a command template into words like a POSIX shell: whitespace separates, single quotes
/// keep everything, double quotes keep everything but `\"` and `\\`, a backslash escapes the next
/// character. Errors name an unterminated quote or a trailing backslash.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or("trailing backslash")?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Replaces every `{name}` in `word` through `lookup`; `{{` and `}}` are literal braces. Errors
/// name an unknown placeholder or an unbalanced brace.
pub fn substitute(word: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let value = lookup(&name).ok_or_else(|| format!("unknown placeholder {{{name}}}"))?;
                out.push_str(&value);
            }
            '}' => return Err("a lone '}' (write '}}' for a brace)".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// True for a parameter or metric name: `[A-Za-z_][A-Za-z0-9_.-]*`, 1..=64 bytes.
pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_PARAM_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One leased command job, as the worker runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandJob {
    pub argv: Vec<String>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: Option<u32>,
    pub params: ParamPoint,
}

/// A 64-bit FNV-1a hash: a stable seed for a sweep's random samples.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64: small, fixed forever, so stored sweeps draw the same points on every version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
