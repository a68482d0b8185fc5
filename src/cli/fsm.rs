//! `migscope fsm`: the kernel's migration FSM explained — multi-step paths, the whole path
//! table for a flag set, and legacy v1 `device_state` values in v2 terms.

use serde_json::json;

use crate::model::{
    self, MigFlags, MigState, StepError, decode_v1, is_hazard, parse_flags, parse_state,
};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// The arcs the kernel walks for one SET (vfio_mig_get_next_state, one step at a time).
    Path {
        /// Migration flags of the device, e.g. STOP_COPY,P2P (STOP_COPY is implied).
        #[arg(long, default_value = "STOP_COPY,P2P")]
        flags: String,
        /// Current state (name or number).
        from: String,
        /// Requested state.
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Every (current, requested) pair for a flag set.
    Table {
        #[arg(long, default_value = "STOP_COPY,P2P")]
        flags: String,
        #[arg(long)]
        json: bool,
    },
    /// Decode a legacy v1 device_state value (bits RUNNING 1, SAVING 2, RESUMING 4, NDMA 8).
    V1 {
        /// The value, decimal or 0x-hex.
        value: String,
        #[arg(long)]
        json: bool,
    },
}

fn arrows(p: &[MigState]) -> String {
    p.iter().map(|s| s.name()).collect::<Vec<_>>().join(" -> ")
}

fn why(e: StepError) -> &'static str {
    match e {
        StepError::CurUnsupported => "the current state is not supported by these flags",
        StepError::TargetUnsupported => {
            "the requested state is not supported by these flags (or is ERROR)"
        }
        StepError::BlockedArc => "a blocked arc: the kernel routes it through ERROR",
    }
}

fn parse_value(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => t.parse::<u32>(),
    };
    r.map_err(|_| format!("`{s}` is not a number (decimal or 0x-hex)"))
}

pub fn run(cmd: Cmd) -> i32 {
    match cmd {
        Cmd::Path {
            flags,
            from,
            to,
            json,
        } => {
            let (f, a, b) = match (parse_flags(&flags), parse_state(&from), parse_state(&to)) {
                (Ok(f), Ok(a), Ok(b)) => (f, a, b),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return super::unusable(e),
            };
            let hazard = is_hazard(f, a, b);
            match model::path(f, a, b) {
                Ok(p) if json => println!(
                    "{}",
                    json!({"path": p.iter().map(|s| s.name()).collect::<Vec<_>>()})
                ),
                Ok(p) => println!("{}", arrows(&p)),
                Err(_) if json => {
                    let mut v = json!({"error": "EINVAL"});
                    if hazard {
                        v["hazard"] = true.into();
                    }
                    println!("{v}");
                }
                Err(e) => {
                    println!("{} -> {}: EINVAL ({})", a.name(), b.name(), why(e));
                    if hazard {
                        println!(
                            "warning: kernels without \"prevent infinite loop in vfio_mig_get_next_state\" hang on this request"
                        );
                    }
                }
            }
            0
        }
        Cmd::Table { flags, json } => {
            let f = match parse_flags(&flags) {
                Ok(f) => f,
                Err(e) => return super::unusable(e),
            };
            print_table(f, json);
            0
        }
        Cmd::V1 { value, json } => {
            let v = match parse_value(&value) {
                Ok(v) => v,
                Err(e) => return super::unusable(e),
            };
            let d = decode_v1(v);
            if json {
                println!(
                    "{}",
                    json!({"value": d.value, "bits": d.bits, "class": d.class.name(),
                           "v2": d.v2.map(MigState::name), "settable": d.settable})
                );
            } else {
                println!("{d}");
            }
            0
        }
    }
}

fn print_table(f: MigFlags, json: bool) {
    let states: Vec<MigState> = MigState::ALL
        .into_iter()
        .filter(|s| f.supports(*s))
        .collect();
    let targets: Vec<MigState> = MigState::ALL
        .into_iter()
        .filter(|s| *s != MigState::Error)
        .collect();
    if json {
        let mut rows = Vec::new();
        for &a in &states {
            for &b in &targets {
                let mut r = json!({"from": a.name(), "to": b.name()});
                match model::path(f, a, b) {
                    Ok(p) => r["path"] = p.iter().map(|s| s.name()).collect::<Vec<_>>().into(),
                    Err(_) => r["error"] = "EINVAL".into(),
                }
                if is_hazard(f, a, b) {
                    r["hazard"] = true.into();
                }
                rows.push(r);
            }
        }
        println!("{}", json!({"flags": model::flag_names(f), "paths": rows}));
        return;
    }
    println!(
        "Paths for flags {} (rows: current state, then each requested state):",
        model::flag_names(f).join(",")
    );
    for &a in &states {
        println!("{}:", a.name());
        for &b in &targets {
            let text = match model::path(f, a, b) {
                Ok(p) if p.len() == 1 => "(no change)".to_owned(),
                Ok(p) => arrows(&p),
                Err(e) => format!(
                    "EINVAL: {}{}",
                    why(e),
                    if is_hazard(f, a, b) {
                        " [hangs unpatched kernels]"
                    } else {
                        ""
                    }
                ),
            };
            println!("  -> {:<13} {text}", b.name());
        }
    }
}
