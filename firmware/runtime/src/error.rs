//! The runtime's error type: small, `Copy`, usable without `alloc`.

use core::fmt;

/// Everything that can go wrong when loading or running a `.tkd` model.
///
/// Loading validates the whole blob, so after `Model::from_bytes` succeeds the
/// only errors `run` can return concern the caller's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The blob is shorter than its header or than the length the header declares.
    Truncated { needed: usize, found: usize },
    /// The blob does not start with the `.tkd` magic bytes.
    BadMagic,
    /// The blob was written by a newer (or unknown) format version.
    UnsupportedVersion { found: u16, supported: u16 },
    /// The CRC-32 stored in the header does not match the contents.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The blob is internally inconsistent; the text says which check failed.
    Malformed(&'static str),
    /// A layer uses an operator this runtime version does not implement.
    UnsupportedOp(u8),
    /// A layer uses an operator left out of this firmware build (see
    /// `Model::run_with_ops`).
    OpNotBuiltIn(u8),
    /// The input slice has the wrong number of elements.
    InputLength { expected: usize, found: usize },
    /// The arena is smaller than the model needs (`Model::arena_bytes`).
    ArenaTooSmall { needed: usize, found: usize },
}

impl Error {
    /// A number for each kind of error (for a serial protocol's error frame).
    pub fn code(&self) -> u8 {
        match self {
            Error::Truncated { .. } => 1,
            Error::BadMagic => 2,
            Error::UnsupportedVersion { .. } => 3,
            Error::ChecksumMismatch { .. } => 4,
            Error::Malformed(_) => 5,
            Error::UnsupportedOp(_) => 6,
            Error::OpNotBuiltIn(_) => 7,
            Error::InputLength { .. } => 8,
            Error::ArenaTooSmall { .. } => 9,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { needed, found } => {
                write!(f, "model blob is truncated: needs {needed} bytes, has {found}")
            }
            Error::BadMagic => f.write_str("not a tinykd model (bad magic bytes)"),
            Error::UnsupportedVersion { found, supported } if found < supported => write!(
                f,
                "model format version {found} is older than this runtime reads ({supported}); \
                 export the model again with this tinykd"
            ),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "model format version {found} is not supported (this runtime reads version {supported}); \
                 rebuild the firmware with a newer tinykd-runtime"
            ),
            Error::ChecksumMismatch { stored, computed } => {
                write!(f, "model blob is corrupt: CRC-32 is {computed:#010x}, header says {stored:#010x}")
            }
            Error::Malformed(what) => write!(f, "model blob is malformed: {what}"),
            Error::UnsupportedOp(op) => write!(f, "layer operator {op} is not supported by this runtime"),
            Error::OpNotBuiltIn(30) => f.write_str(
                "the model's default (double-rounding) requantization is not built into this firmware \
                 (build it with the model's operator set)",
            ),
            Error::OpNotBuiltIn(31) => f.write_str(
                "the model's single-rounding requantization is not built into this firmware \
                 (build it with the model's operator set)",
            ),
            Error::OpNotBuiltIn(op) => {
                write!(
                    f,
                    "layer operator {op} is not built into this firmware (build it with the model's operator set)"
                )
            }
            Error::InputLength { expected, found } => {
                write!(f, "input has {found} elements, the model expects {expected}")
            }
            Error::ArenaTooSmall { needed, found } => {
                write!(f, "arena has {found} bytes, the model needs {needed}")
            }
        }
    }
}

impl core::error::Error for Error {}
