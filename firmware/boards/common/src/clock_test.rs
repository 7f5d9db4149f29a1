//! The clock self-test image, built instead of the serve loop when the
//! board's build script sees `TINYKD_CLOCK_TEST=1` (`cfg(tinykd_clock_test)`):
//! the board reads its counter in a loop across many wraps of the counter's
//! low part and reports on its UART whether a reading ever went backwards
//! or jumped further than a small bound. The emulator tests run it on every
//! emulated board; production images never contain it.

use crate::Link;

/// Consecutive readings of a clock and what was wrong with them.
#[derive(Debug)]
pub struct Watch {
    last: u64,
    /// Largest step between two consecutive readings that is not a jump.
    bound: u64,
    reads: u64,
    backwards: u32,
    jumps: u32,
    max_step: u64,
    /// The first bad pair of readings: (earlier, later).
    first_bad: Option<(u64, u64)>,
}

impl Watch {
    /// Starts from the reading `first`; steps over `bound` ticks are jumps.
    pub fn new(first: u64, bound: u64) -> Watch {
        Watch { last: first, bound, reads: 1, backwards: 0, jumps: 0, max_step: 0, first_bad: None }
    }

    /// Checks the next reading against the previous one; whether it was
    /// wrong.
    #[inline(always)]
    pub fn see(&mut self, t: u64) -> bool {
        self.reads += 1;
        let bad = if t < self.last {
            self.backwards += 1;
            true
        } else {
            let step = t - self.last;
            self.max_step = self.max_step.max(step);
            if step > self.bound {
                self.jumps += 1;
            }
            step > self.bound
        };
        if bad {
            self.first_bad.get_or_insert((self.last, t));
        }
        self.last = t;
        bad
    }

    /// Checks a reading taken after a deliberate gap: only that it did not
    /// go backwards.
    pub fn see_after_gap(&mut self, t: u64) {
        self.reads += 1;
        if t < self.last {
            self.backwards += 1;
            self.first_bad.get_or_insert((self.last, t));
        }
        self.last = t;
    }

    /// The last reading.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Sends the result as one line and stops:
    /// `tinykd-clock-test pass wraps=… reads=… masked=… backwards=0 jumps=0 max_step=… bound=…`
    /// then `more`'s counts (`fail`, and `first_bad=A->B`, when a reading
    /// was wrong).
    pub fn report<L: Link>(&self, link: &mut L, wraps: u64, masked: u64, more: &[(&[u8], u64)]) -> ! {
        let ok = self.backwards == 0 && self.jumps == 0;
        link.write_all(if ok { b"tinykd-clock-test pass" } else { b"tinykd-clock-test fail" });
        for (name, v) in [
            (&b" wraps="[..], wraps),
            (b" reads=", self.reads),
            (b" masked=", masked),
            (b" backwards=", self.backwards as u64),
            (b" jumps=", self.jumps as u64),
            (b" max_step=", self.max_step),
            (b" bound=", self.bound),
        ]
        .iter()
        .chain(more)
        {
            link.write_all(name);
            write_u64(link, *v);
        }
        if let Some((a, b)) = self.first_bad {
            link.write_all(b" first_bad=");
            write_u64(link, a);
            link.write_all(b"->");
            write_u64(link, b);
        }
        link.write_all(b"\r\n");
        loop {
            core::hint::spin_loop();
        }
    }
}

fn write_u64<L: Link>(link: &mut L, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    link.write_all(&digits[i..]);
}

/// xorshift32: varies the self-test's read pattern so that readings fall at
/// every phase of a wrap.
pub fn next_random(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}
