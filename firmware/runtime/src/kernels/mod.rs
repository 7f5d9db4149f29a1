//! Int8 kernels. Portable Rust, integer only, no allocation, no panics on the
//! lengths `Model::from_bytes` has validated.

pub mod fully_connected;

pub use fully_connected::fully_connected;

/// Per-output-channel requantization parameters, read from the channel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelQuant {
    /// Bias with the input zero point folded in: `bias − z_in · Σ w`.
    pub bias: i32,
    /// Q31 multiplier of `s_in · s_w / s_out`.
    pub multiplier: i32,
    /// Power-of-two exponent of the same scale.
    pub shift: i32,
}

impl ChannelQuant {
    /// Decodes one 12-byte channel-table entry.
    #[inline(always)]
    pub fn from_le_bytes(b: &[u8; 12]) -> ChannelQuant {
        ChannelQuant {
            bias: i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            multiplier: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            shift: i32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    /// Encodes the entry as stored in a `.tkd` channel table.
    pub fn to_le_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0..4].copy_from_slice(&self.bias.to_le_bytes());
        out[4..8].copy_from_slice(&self.multiplier.to_le_bytes());
        out[8..12].copy_from_slice(&self.shift.to_le_bytes());
        out
    }

    /// Requantizes an int32 accumulator to int8: scale, add the output zero
    /// point, clamp to the fused activation range.
    #[inline(always)]
    pub fn requantize(self, acc: i32, output_zero_point: i32, act_min: i8, act_max: i8) -> i8 {
        let scaled = crate::requant::multiply_by_quantized_multiplier(acc, self.multiplier, self.shift);
        let v = scaled.saturating_add(output_zero_point);
        v.clamp(act_min as i32, act_max as i32) as i8
    }
}

/// Output clamp of a fused activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamp {
    pub min: i8,
    pub max: i8,
}
