//! A model compiled into the firmware: its layers as a constant table of
//! [`Step`]s — shapes, quantization and tensor slices fixed at compile time
//! — run by the same code as [`Model::run`](crate::Model::run).
//!
//! A board's build script validates the `.tkd` it embeds with
//! [`Model::from_bytes`](crate::Model::from_bytes), then writes this table
//! as Rust source (`tinykd-board-build`): the weights and channel tables
//! become `static` arrays, every layer a [`Step`] built by a `const fn`.
//! What the firmware then leaves out, compared with loading the blob at run
//! time: the header and CRC check, decoding 64-byte layer records, the
//! per-layer shape derivation, the interpreter's dispatch on unknown
//! operators, and the blob's metadata bytes (header, layer records, the
//! host-only weight scales). The arithmetic is the very same: both paths
//! call [`Step::run`] through the same layer loop, so a compiled model is
//! bit-identical with the interpreted one by construction (and tested, on
//! the host here and on every emulated board).

use crate::error::Error;
use crate::format::{self, OpSet, layer::PARAM_COUNT};
use crate::kernels::{ChannelTable, Clamp, ConvParams, PoolParams};
use crate::model::Identity;

pub use crate::ops::Step;

impl<C: ChannelTable> Step<'_, C> {
    /// Runs the layer. Operators outside `OPS` are [`Error::OpNotBuiltIn`]
    /// and their kernels are never linked (each guard is a constant);
    /// `single` selects TFLite's single rounding (constant too unless `OPS`
    /// links both variants).
    #[inline(always)]
    pub fn run<const OPS: OpSet>(&self, single: bool, input: &[i8], output: &mut [i8]) -> Result<(), Error> {
        self.run_layer::<OPS, { usize::MAX }, 0>(single, input, output)
    }

    /// [`Step::run`] with the kernel's body inlined and its helpers
    /// instantiated for `LAYER` alone, `WINDOW` what [`Step::window`] gives
    /// (the length of a convolution's filter to gather, see
    /// [`kernels::conv::conv2d_layer`], or of a fully connected layer's
    /// input, see [`kernels::fully_connected::fully_connected_layer`]), or
    /// 0: for a compiled model's per-layer functions.
    #[inline(always)]
    pub fn run_layer<const OPS: OpSet, const LAYER: usize, const WINDOW: usize>(
        &self,
        single: bool,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error> {
        // Folded again here, where the kernel is chosen: the caller's value
        // may come through a closure or a function pointer LLVM cannot see.
        let single = linked_rounding::<OPS>(single);
        self.dispatch::<OPS, LAYER, WINDOW>(single, input, output)
    }
}

/// Where a layer reads a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The caller's input.
    Input,
    /// Bytes `start..end` of the arena.
    Arena(usize, usize),
}

/// A layer's place in the graph: the tensors it reads and the arena range
/// it writes (see [`crate::format`]'s layer record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    pub input: Source,
    /// A two-input operator's second input: [`connect`] puts it in the
    /// output range before the kernel runs, which then combines the first
    /// input into it (an in-place plan has it there already).
    pub second: Option<Source>,
    /// Bytes `start..end` of the arena.
    pub output: (usize, usize),
}

impl Wiring {
    /// The wiring as a Rust expression, for a compiled model's source.
    #[cfg(feature = "codegen")]
    pub fn source(&self, krate: &str) -> alloc::string::String {
        let source = |s: Source| match s {
            Source::Input => alloc::format!("{krate}::compiled::Source::Input"),
            Source::Arena(a, b) => alloc::format!("{krate}::compiled::Source::Arena({a}, {b})"),
        };
        let second = match self.second {
            None => "None".into(),
            Some(s) => alloc::format!("Some({})", source(s)),
        };
        alloc::format!(
            "{krate}::compiled::Wiring {{ input: {}, second: {second}, output: ({}, {}) }}",
            source(self.input),
            self.output.0,
            self.output.1
        )
    }
}

/// One layer of a compiled model: its step and its wiring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompiledLayer<'a, C: ChannelTable = &'a [u8]> {
    pub step: Step<'a, C>,
    pub wiring: Wiring,
}

/// A model compiled into the firmware (see the module doc), linking the
/// kernels of the operators in `OPS` only (the build script's `MODEL_OPS`).
#[derive(Debug, Clone, Copy)]
pub struct Compiled<'a, const OPS: OpSet, C: ChannelTable = &'a [u8]> {
    pub layers: &'a [CompiledLayer<'a, C>],
    /// What the `.tkd` it was compiled from says about itself.
    pub identity: Identity,
    /// The operators the layers use, with [`format::SINGLE_ROUNDING`] when
    /// the model rounds once (as [`Model::ops`](crate::Model::ops)).
    pub ops: OpSet,
    /// Each layer through its own specialised kernel ([`Step::run_layer`]),
    /// from a table of layer functions or as one generated function (see
    /// [`Specialized`]), or `None` to run every layer through the shared
    /// kernels ([`Step::run`]). A specialised model runs from this alone,
    /// without reading `layers`: its layer functions read their steps at
    /// compile time, so the table (and the raw channel tables its steps
    /// point to, which the functions read prepared) is left out of the
    /// image.
    pub specialized: Option<Specialized<'a>>,
}

/// How a specialised model runs its layer functions.
#[derive(Debug, Clone, Copy)]
pub enum Specialized<'a> {
    /// From a table, through the arena plan's loop: a build for speed
    /// (LLVM inlines what pays off; the straight-line form was 1.5 KB
    /// larger for the main job on the M3 at opt-level 3, for 1 % fewer
    /// instructions).
    Layers(&'a [SpecializedLayer]),
    /// One generated function calling them on constant arena ranges: a
    /// build for size (microflow's shape at opt-level "s": 392 B less).
    Model(ModelFn),
}

/// A specialised model's function: `(single rounding, input, arena)` to
/// the logits, in the arena. It checks the input's and the arena's
/// lengths itself, with the errors of [`Compiled::run`].
pub type ModelFn = for<'b> fn(bool, &[i8], &'b mut [u8]) -> Result<&'b [i8], Error>;

/// A compiled model's function for one layer: `(single rounding, input, output)`.
pub type LayerFn = fn(bool, &[i8], &mut [i8]) -> Result<(), Error>;

/// One layer of a specialised model: its function and wiring.
#[derive(Debug, Clone, Copy)]
pub struct SpecializedLayer {
    pub run: LayerFn,
    pub wiring: Wiring,
}

impl<const OPS: OpSet, C: ChannelTable> Compiled<'_, OPS, C> {
    /// Runs the model on one int8 input; the logits live in `arena`. The
    /// same checks and errors as [`Model::run_with_ops`](crate::Model::run_with_ops).
    pub fn run<'b>(&self, input: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], Error> {
        let single = check_ops::<OPS>(self.ops)?;
        let id = &self.identity;
        let (len, bytes) = (id.input_len, id.arena_bytes);
        let missing = Error::Malformed("layer record out of bounds");
        match self.specialized {
            None => {
                let layer = |i: usize| self.layers.get(i).copied().ok_or(missing);
                run_graph(self.layers.len(), input, len, arena, bytes, layer, |l, x, y| l.step.run::<OPS>(single, x, y))
            }
            Some(Specialized::Layers(fns)) => {
                let layer = |i: usize| fns.get(i).copied().ok_or(missing);
                run_graph(fns.len(), input, len, arena, bytes, layer, |l, x, y| (l.run)(single, x, y))
            }
            Some(Specialized::Model(model)) => model(single, input, arena),
        }
    }
}

/// Whether a model with operator set `model_ops` can run in a build
/// linking `OPS`, and if so whether it rounds once.
#[inline(always)]
pub(crate) fn check_ops<const OPS: OpSet>(model_ops: OpSet) -> Result<bool, Error> {
    let missing = model_ops & !OPS;
    if missing != 0 {
        return Err(Error::OpNotBuiltIn(missing.trailing_zeros() as u8));
    }
    let links_double = OPS & format::SINGLE_ROUNDING == 0 || OPS & format::DOUBLE_ROUNDING != 0;
    if !links_double && model_ops & format::SINGLE_ROUNDING == 0 {
        return Err(Error::OpNotBuiltIn(30));
    }
    Ok(linked_rounding::<OPS>(model_ops & format::SINGLE_ROUNDING != 0))
}

/// Whether to round once, for a model that asks for `single`, in a build
/// linking `OPS`: a constant unless `OPS` links both variants, so only the
/// linked one is compiled in (`check_ops` refuses a model whose variant is
/// not linked).
#[inline(always)]
const fn linked_rounding<const OPS: OpSet>(single: bool) -> bool {
    match (OPS & format::SINGLE_ROUNDING != 0, OPS & format::DOUBLE_ROUNDING != 0) {
        (false, _) => false,
        (true, false) => true,
        (true, true) => single,
    }
}

/// Runs `count` layers of a graph, each on the tensors its [`Wiring`]
/// names (see [`connect`]); the last layer's output is the model's.
/// `layer(i)` gives layer `i`, `exec(layer, input, output)` runs it.
#[inline(always)]
pub(crate) fn run_graph<'b, L: Wired>(
    count: usize,
    input: &[i8],
    input_len: usize,
    arena: &'b mut [u8],
    arena_bytes: usize,
    mut layer: impl FnMut(usize) -> Result<L, Error>,
    mut exec: impl FnMut(&L, &[i8], &mut [i8]) -> Result<(), Error>,
) -> Result<&'b [i8], Error> {
    if input.len() != input_len {
        return Err(Error::InputLength { expected: input_len, found: input.len() });
    }
    if arena.len() < arena_bytes {
        return Err(Error::ArenaTooSmall { needed: arena_bytes, found: arena.len() });
    }
    let arena = &mut arena[..arena_bytes];
    let mut last = (0, 0);
    for i in 0..count {
        let l = layer(i)?;
        let wiring = l.wiring();
        // One call site for `exec`: it may be a whole kernel, inlined.
        let (x, y) = connect(input, arena, wiring)?;
        exec(&l, x, y)?;
        last = wiring.output;
    }
    arena.get(last.0..last.1).map(crate::as_i8).ok_or(Error::Malformed("layer output does not fit the arena"))
}

/// One layer's tensors: its input (the caller's `input`, or an arena range
/// outside its output) and its output range of `arena`, with a second
/// input copied into the output first unless the plan put it there.
/// Validated models never fail here; on other wirings this is an error,
/// never a panic or an alias. For [`run_graph`] and for a size build's
/// generated model function (`codegen`), which calls it with constants.
#[inline(always)]
pub fn connect<'b>(input: &'b [i8], arena: &'b mut [u8], wiring: Wiring) -> Result<(&'b [i8], &'b mut [i8]), Error> {
    let bad = Error::Malformed("layer tensors overlap or lie outside the arena");
    let (start, end) = wiring.output;
    if start > end || end > arena.len() {
        return Err(bad);
    }
    match wiring.second {
        None => {}
        Some(Source::Input) => {
            let out = &mut arena[start..end];
            if input.len() != out.len() {
                return Err(bad);
            }
            out.copy_from_slice(crate::as_u8(input));
        }
        Some(Source::Arena(a, b)) if (a, b) == (start, end) => {}
        Some(Source::Arena(a, b)) => {
            if b.checked_sub(a) != Some(end - start) || b > arena.len() || (a < end && start < b) {
                return Err(bad);
            }
            arena.copy_within(a..b, start);
        }
    }
    let (lo, rest) = arena.split_at_mut(start);
    let (out, hi) = rest.split_at_mut(end - start);
    let x: &[u8] = match wiring.input {
        Source::Input => crate::as_u8(input),
        Source::Arena(a, b) if b <= start => lo.get(a..b).ok_or(bad)?,
        Source::Arena(a, b) if a >= end => hi.get(a - end..b - end).ok_or(bad)?,
        Source::Arena(..) => return Err(bad),
    };
    Ok((crate::as_i8(x), crate::as_i8_mut(out)))
}

/// What [`run_graph`] needs of a layer besides running it.
pub(crate) trait Wired {
    fn wiring(&self) -> Wiring;
}

impl<C: ChannelTable> Wired for CompiledLayer<'_, C> {
    fn wiring(&self) -> Wiring {
        self.wiring
    }
}

impl Wired for SpecializedLayer {
    fn wiring(&self) -> Wiring {
        self.wiring
    }
}

/// A convolution's parameters for a compiled model's table; fails the
/// build (a compile-time panic) on parameters `from_bytes` would refuse.
pub const fn conv(p: [u16; PARAM_COUNT], input_zero_point: i32, output_zero_point: i32, clamp: Clamp) -> ConvParams {
    match ConvParams::from_record(p, input_zero_point, output_zero_point, clamp) {
        Ok(c) => c,
        Err(e) => panic!("{}", e),
    }
}

/// A pooling layer's parameters for a compiled model's table (see [`conv`]).
pub const fn pool(p: [u16; PARAM_COUNT], clamp: Clamp) -> PoolParams {
    match PoolParams::from_record(p, clamp) {
        Ok(c) => c,
        Err(e) => panic!("{}", e),
    }
}
