//! What kind of failure ended a command: its exit code and the hint printed
//! under the error. Stages mark their errors (`.context(Failure::Data)` and
//! so on); the marker is left out of the printed message.
//!
//! | exit | failure |
//! |---:|---|
//! | 0 | success |
//! | 1 | any other error (bad option value, config, model file, I/O) |
//! | 2 | command-line usage (unknown flag, missing argument; from clap) |
//! | 3 | data: the dataset cannot be read or does not fit the model |
//! | 4 | teacher: the ONNX teacher cannot be opened or run |
//! | 5 | build: the firmware does not build or does not fit the board |
//! | 6 | board: the board (emulated or real) does not answer or disagrees |

use std::fmt;

/// A failure category (see the module table for the exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Data,
    Teacher,
    Build,
    Board,
}

impl Failure {
    const ALL: [Failure; 4] = [Failure::Data, Failure::Teacher, Failure::Build, Failure::Board];

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Data => 3,
            Failure::Teacher => 4,
            Failure::Build => 5,
            Failure::Board => 6,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Failure::Data => {
                "`tinykd inspect DATA` lists the arrays found; the data contract (docs/pipeline.md) names what is expected (x_train, y_train, x_test, y_test)"
            }
            Failure::Teacher => {
                "`tinykd inspect TEACHER.onnx` shows its inputs and outputs; `--backend ort` runs what tract cannot, `--teacher-output NAME` picks the scores"
            }
            Failure::Build => {
                "`bash scripts/setup.sh` installs the Rust targets and QEMU; `tinykd emulate --board` lists the boards and their memory"
            }
            Failure::Board => {
                "try `--limit 10` first; for a real board check `--port` and `--baud`, and that it runs tinykd's firmware (`tinykd flash`)"
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Data => "data error",
            Failure::Teacher => "teacher error",
            Failure::Build => "firmware build error",
            Failure::Board => "board error",
        })
    }
}

impl std::error::Error for Failure {}

/// The error's message (every cause, joined by ": ", the markers left out),
/// its hint, and the exit code.
pub fn describe(e: &anyhow::Error) -> (String, String, u8) {
    // anyhow finds a context type through every layer; the chain shows a
    // marker as its Display, which is how it is left out.
    let failure = e.downcast_ref::<Failure>().copied();
    let markers: Vec<String> = Failure::ALL.iter().map(ToString::to_string).collect();
    let message: Vec<String> = e.chain().map(|c| c.to_string()).filter(|m| !markers.contains(m)).collect();
    let message = message.join(": ");
    let hint = match failure {
        Some(f) => f.hint().to_owned(),
        None => {
            "`tinykd help COMMAND` lists a command's options; docs/pipeline.md walks through the pipeline".to_owned()
        }
    };
    (message, hint, failure.map_or(1, Failure::exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn markers_set_the_code_and_stay_out_of_the_message() {
        let e = Err::<(), _>(anyhow::anyhow!("x_train is missing"))
            .context("data.npz: cannot load")
            .context(Failure::Data)
            .unwrap_err();
        let (msg, hint, code) = describe(&e);
        assert_eq!(msg, "data.npz: cannot load: x_train is missing");
        assert_eq!(code, 3);
        assert!(hint.contains("tinykd inspect"));
        let (_, _, code) = describe(&anyhow::anyhow!("plain"));
        assert_eq!(code, 1);
    }
}
