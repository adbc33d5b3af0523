//! The `size` of a generated image: an aspect ratio from Apimart's list
//! (docs/apimart.md, "Submit").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::task::ParseEnumError;

/// An aspect ratio `width:height` that every Apimart image model accepts as
/// `size`. Model-specific extras (`auto`, pixel sizes) are deliberately left
/// out so that a request never depends on the configured model.
///
/// Defaults to `4:3`, as in the earlier service (docs/legacy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AspectRatio {
    /// `1:1`, square.
    Square1x1,
    /// `2:3`, portrait.
    Portrait2x3,
    /// `3:2`, landscape.
    Landscape3x2,
    /// `3:4`, portrait.
    Portrait3x4,
    /// `4:3`, landscape; the default.
    #[default]
    Landscape4x3,
    /// `4:5`, portrait.
    Portrait4x5,
    /// `5:4`, landscape.
    Landscape5x4,
    /// `9:16`, tall portrait.
    Portrait9x16,
    /// `16:9`, wide landscape.
    Landscape16x9,
    /// `21:9`, ultra-wide landscape.
    Landscape21x9,
}

/// The accepted values in wire form, for error messages.
const EXPECTED: &str = "1:1 2:3 3:2 3:4 4:3 4:5 5:4 9:16 16:9 21:9";

impl AspectRatio {
    /// Every value, in Apimart's documented order.
    pub const ALL: [AspectRatio; 10] = [
        AspectRatio::Square1x1,
        AspectRatio::Portrait2x3,
        AspectRatio::Landscape3x2,
        AspectRatio::Portrait3x4,
        AspectRatio::Landscape4x3,
        AspectRatio::Portrait4x5,
        AspectRatio::Landscape5x4,
        AspectRatio::Portrait9x16,
        AspectRatio::Landscape16x9,
        AspectRatio::Landscape21x9,
    ];

    /// The wire form sent to Apimart as `size`, e.g. `4:3`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AspectRatio::Square1x1 => "1:1",
            AspectRatio::Portrait2x3 => "2:3",
            AspectRatio::Landscape3x2 => "3:2",
            AspectRatio::Portrait3x4 => "3:4",
            AspectRatio::Landscape4x3 => "4:3",
            AspectRatio::Portrait4x5 => "4:5",
            AspectRatio::Landscape5x4 => "5:4",
            AspectRatio::Portrait9x16 => "9:16",
            AspectRatio::Landscape16x9 => "16:9",
            AspectRatio::Landscape21x9 => "21:9",
        }
    }

    /// The ratio as `(width, height)` terms, e.g. `(4, 3)`.
    pub fn ratio(&self) -> (u32, u32) {
        match self {
            AspectRatio::Square1x1 => (1, 1),
            AspectRatio::Portrait2x3 => (2, 3),
            AspectRatio::Landscape3x2 => (3, 2),
            AspectRatio::Portrait3x4 => (3, 4),
            AspectRatio::Landscape4x3 => (4, 3),
            AspectRatio::Portrait4x5 => (4, 5),
            AspectRatio::Landscape5x4 => (5, 4),
            AspectRatio::Portrait9x16 => (9, 16),
            AspectRatio::Landscape16x9 => (16, 9),
            AspectRatio::Landscape21x9 => (21, 9),
        }
    }

    /// Pixel `(width, height)` of an image of this ratio whose longer side is
    /// `long_side` pixels; the shorter side is rounded to the nearest pixel and
    /// is at least 1 when `long_side` is. `long_side = 0` gives `(0, 0)`.
    ///
    /// E.g. `4:3` with 1024 → `(1024, 768)`; `9:16` with 1024 → `(576, 1024)`.
    pub fn dimensions(&self, long_side: u32) -> (u32, u32) {
        let (w, h) = self.ratio();
        let (long, short) = (w.max(h), w.min(h));
        // u64 so that long_side * short cannot overflow; the quotient is at
        // most long_side, so it fits back into u32.
        let scaled =
            (u64::from(long_side) * u64::from(short) + u64::from(long) / 2) / u64::from(long);
        let short_side = u32::try_from(scaled).unwrap_or(long_side);
        let short_side = if long_side > 0 { short_side.max(1) } else { 0 };
        if w >= h {
            (long_side, short_side)
        } else {
            (short_side, long_side)
        }
    }
}

impl fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AspectRatio {
    type Err = ParseEnumError;

    /// Exactly one of the wire forms (`1:1`, `2:3`, … `21:9`); no spaces, no
    /// reduced or reordered spellings.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AspectRatio::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseEnumError {
                value: s.chars().take(64).collect(),
                expected: EXPECTED,
            })
    }
}

impl Serialize for AspectRatio {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AspectRatio {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_is_four_by_three() {
        assert_eq!(AspectRatio::default().as_str(), "4:3");
    }

    #[test]
    fn dimensions_keep_the_ratio_and_orientation() {
        assert_eq!(AspectRatio::Landscape4x3.dimensions(1024), (1024, 768));
        assert_eq!(AspectRatio::Portrait9x16.dimensions(1024), (576, 1024));
        assert_eq!(AspectRatio::Square1x1.dimensions(7), (7, 7));
        assert_eq!(AspectRatio::Landscape21x9.dimensions(1), (1, 1));
        assert_eq!(AspectRatio::Landscape21x9.dimensions(0), (0, 0));
        assert_eq!(
            AspectRatio::Landscape21x9.dimensions(u32::MAX),
            (u32::MAX, 1_840_700_269)
        );
    }

    #[test]
    fn serde_uses_the_wire_form() {
        assert_eq!(
            serde_json::to_string(&AspectRatio::Landscape16x9).unwrap(),
            "\"16:9\""
        );
        assert_eq!(
            serde_json::from_str::<AspectRatio>("\"2:3\"").unwrap(),
            AspectRatio::Portrait2x3
        );
        assert!(serde_json::from_str::<AspectRatio>("\"auto\"").is_err());
    }

    proptest! {
        #[test]
        fn every_ratio_round_trips_through_its_wire_form(i in 0usize..10) {
            let r = AspectRatio::ALL[i];
            prop_assert_eq!(r.as_str().parse::<AspectRatio>(), Ok(r));
            prop_assert_eq!(r.to_string(), r.as_str());
            let (w, h) = r.ratio();
            prop_assert_eq!(r.as_str(), format!("{w}:{h}"));
        }

        #[test]
        fn strings_outside_the_list_are_rejected(s in ".*|[0-9]{1,2}:[0-9]{1,2}| ?4:3 ?") {
            let listed = AspectRatio::ALL.iter().any(|r| r.as_str() == s);
            prop_assert_eq!(s.parse::<AspectRatio>().is_ok(), listed);
        }

        #[test]
        fn dimensions_put_long_side_on_the_longer_axis_and_round_the_other(
            i in 0usize..10, long_side in any::<u32>()
        ) {
            let r = AspectRatio::ALL[i];
            let (w, h) = r.dimensions(long_side);
            let (rw, rh) = r.ratio();
            prop_assert_eq!(w.max(h), long_side);
            if rw >= rh { prop_assert_eq!(w, long_side) } else { prop_assert_eq!(h, long_side) }
            // |w*rh - h*rw| is at most half a pixel of the long term (or the 1-pixel floor).
            let err = (u128::from(w) * u128::from(rh)).abs_diff(u128::from(h) * u128::from(rw));
            prop_assert!(err * 2 <= u128::from(rw.max(rh)) || w.min(h) == 1 || long_side == 0);
        }
    }
}
