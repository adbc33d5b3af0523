//! Result images that really depict the request: the input photos side by side (the first
//! large, as "the model"; the others smaller, as garments), on a canvas of the requested
//! aspect ratio, under a banner naming the simulator, the size and the prompt.
//!
//! Everything a client sends is untrusted: an input that cannot be decoded becomes a
//! placeholder tile, decoding runs under size limits, and no path here panics.

use std::io::Cursor;

use font8x8::legacy::BASIC_LEGACY;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{DynamicImage, ImageEncoder, ImageReader, Limits, Rgb, RgbImage};

/// Characters of the prompt shown in the banner.
pub const BANNER_PROMPT_CHARS: usize = 40;
/// Largest input width or height decoded, in pixels; bigger inputs become placeholders
/// (protects the simulator from decompression bombs).
pub const MAX_INPUT_SIDE: u32 = 8192;
/// Memory the decoder may allocate for one input, in bytes.
pub const MAX_INPUT_ALLOC: u64 = 256 * 1024 * 1024;
/// Fewest banner characters per line before the font is scaled down (keeps the prompt
/// legible on narrow 9:16 canvases).
const MIN_BANNER_CHARS: u32 = 24;

const BANNER_BG: Rgb<u8> = Rgb([28, 38, 88]);
const TITLE_FG: Rgb<u8> = Rgb([255, 214, 64]);
const TEXT_FG: Rgb<u8> = Rgb([255, 255, 255]);
const PLACEHOLDER_BG: Rgb<u8> = Rgb([150, 150, 150]);
const PLACEHOLDER_FG: Rgb<u8> = Rgb([40, 40, 40]);
const FRAME: Rgb<u8> = Rgb([255, 255, 255]);

/// One reference image as kept in a task record until its results are drawn.
#[derive(Debug)]
pub(crate) enum InputImage {
    /// Bytes decoded from a data URI's base64 payload (format sniffed when drawn).
    Encoded(Vec<u8>),
    /// An `https://` URL, which cannot be fetched offline: drawn as a tile labelled "URL".
    Url { host: String },
    /// A data URI whose base64 did not decode.
    Undecodable,
}

/// Everything needed to draw a task's results.
#[derive(Debug)]
pub(crate) struct RenderJob {
    /// Requested aspect ratio (width, height).
    pub(crate) ratio: (u32, u32),
    /// Long side of the canvas in px.
    pub(crate) long_side: u32,
    /// Already reduced to printable ASCII, at most [`BANNER_PROMPT_CHARS`].
    pub(crate) prompt_label: String,
    /// Number of images (`n`).
    pub(crate) count: usize,
    pub(crate) inputs: std::sync::Arc<[InputImage]>,
}

/// Canvas size for an aspect ratio: the long side is `long_side`, the other rounded.
pub(crate) fn canvas_size((rw, rh): (u32, u32), long_side: u32) -> (u32, u32) {
    let (rw, rh, long) = (
        u64::from(rw.max(1)),
        u64::from(rh.max(1)),
        u64::from(long_side),
    );
    let short = |a: u64, b: u64| u32::try_from(((long * a + b / 2) / b).max(1)).unwrap_or(1);
    if rw >= rh {
        (long_side, short(rh, rw))
    } else {
        (short(rw, rh), long_side)
    }
}

/// The first [`BANNER_PROMPT_CHARS`] characters of `prompt`, non-printable-ASCII as `?`.
pub(crate) fn banner_label(prompt: &str) -> String {
    prompt
        .chars()
        .take(BANNER_PROMPT_CHARS)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// Draws all `job.count` result PNGs (inputs are decoded once for all of them).
pub(crate) fn render_all(job: &RenderJob) -> Result<Vec<Vec<u8>>, image::ImageError> {
    let decoded: Vec<Tile> = job.inputs.iter().map(Tile::from_input).collect();
    (0..job.count)
        .map(|index| {
            let canvas = compose(job, &decoded, index);
            encode_png(&canvas)
        })
        .collect()
}

enum Tile {
    Picture(DynamicImage),
    Placeholder(Vec<String>),
}

impl Tile {
    fn from_input(input: &InputImage) -> Self {
        match input {
            InputImage::Encoded(bytes) => match decode(bytes) {
                Some(img) => Self::Picture(img),
                None => Self::Placeholder(vec!["BAD IMAGE".into()]),
            },
            InputImage::Url { host } => Self::Placeholder(vec!["URL".into(), banner_label(host)]),
            InputImage::Undecodable => Self::Placeholder(vec!["BAD BASE64".into()]),
        }
    }
}

fn decode(bytes: &[u8]) -> Option<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    limits.max_alloc = Some(MAX_INPUT_ALLOC);
    reader.limits(limits);
    reader.decode().ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

impl Rect {
    fn inset(self, by: u32) -> Self {
        let by = by.min(self.w / 2).min(self.h / 2);
        Self {
            x: self.x + by,
            y: self.y + by,
            w: self.w - 2 * by,
            h: self.h - 2 * by,
        }
    }
}

fn compose(job: &RenderJob, tiles: &[Tile], index: usize) -> RgbImage {
    let (w, h) = canvas_size(job.ratio, job.long_side);
    let long = job.long_side.max(1);
    let pad = (long / 64).max(2);
    let usable = w.saturating_sub(2 * pad);
    let scale = (long / 256).min(usable / (8 * MIN_BANNER_CHARS)).max(1);
    let per_line = usize::try_from((usable / (8 * scale)).max(1)).unwrap_or(1);

    let mut lines = vec![
        "APIMART SIM".to_owned(),
        format!(
            "{}:{}  #{}/{}",
            job.ratio.0,
            job.ratio.1,
            index + 1,
            job.count
        ),
    ];
    let prompt: Vec<char> = job.prompt_label.chars().collect();
    lines.extend(
        prompt
            .chunks(per_line)
            .map(|c| c.iter().collect::<String>()),
    );

    // Each of the n images gets a slightly different background, so they are distinct files.
    let shade = u8::try_from((index * 18) % 90).unwrap_or(0);
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([236 - shade, 236, 228 + shade / 4]));

    let line_h = 10 * scale;
    let lines_h = u32::try_from(lines.len()).unwrap_or(1) * line_h;
    let banner_h = (2 * pad + lines_h).min(h / 2);
    fill(
        &mut canvas,
        Rect {
            x: 0,
            y: 0,
            w,
            h: banner_h,
        },
        BANNER_BG,
    );
    for (i, line) in lines.iter().enumerate() {
        let y = pad + u32::try_from(i).unwrap_or(0) * line_h;
        let color = if i == 0 { TITLE_FG } else { TEXT_FG };
        draw_text(&mut canvas, pad, y, scale, line, color, banner_h);
    }

    let area = Rect {
        x: 0,
        y: banner_h,
        w,
        h: h - banner_h,
    }
    .inset(pad);
    if area.w == 0 || area.h == 0 {
        return canvas;
    }
    match tiles.split_first() {
        None => {
            let msg = vec!["NO INPUT IMAGES".to_owned()];
            draw_placeholder(&mut canvas, area, &msg, scale);
        }
        Some((model, [])) => draw_tile(&mut canvas, area, model, scale),
        Some((model, garments)) => {
            let (model_area, rest) = split(area, pad);
            draw_tile(&mut canvas, model_area, model, scale);
            for (cell, tile) in grid(rest, garments.len()).into_iter().zip(garments) {
                draw_tile(&mut canvas, cell.inset(pad / 2), tile, 1);
            }
        }
    }
    canvas
}

/// Splits the content area 60/40 along its longer axis: model first, garments second.
fn split(area: Rect, gap: u32) -> (Rect, Rect) {
    if area.w >= area.h {
        let first = area.w * 3 / 5;
        let rest_x = (area.x + first + gap).min(area.x + area.w);
        (
            Rect { w: first, ..area },
            Rect {
                x: rest_x,
                w: area.x + area.w - rest_x,
                ..area
            },
        )
    } else {
        let first = area.h * 3 / 5;
        let rest_y = (area.y + first + gap).min(area.y + area.h);
        (
            Rect { h: first, ..area },
            Rect {
                y: rest_y,
                h: area.y + area.h - rest_y,
                ..area
            },
        )
    }
}

/// `count` cells filling `area`, more rows than columns when the area is tall.
fn grid(area: Rect, count: usize) -> Vec<Rect> {
    let count = u32::try_from(count.max(1)).unwrap_or(1);
    let mut major = 1;
    while major * major < count {
        major += 1;
    }
    let minor = count.div_ceil(major);
    let (cols, rows) = if area.h > area.w {
        (minor, major)
    } else {
        (major, minor)
    };
    let (cw, ch) = (area.w / cols, area.h / rows);
    (0..count)
        .map(|i| Rect {
            x: area.x + (i % cols) * cw,
            y: area.y + (i / cols) * ch,
            w: cw,
            h: ch,
        })
        .collect()
}

fn draw_tile(canvas: &mut RgbImage, cell: Rect, tile: &Tile, scale: u32) {
    if cell.w < 3 || cell.h < 3 {
        return;
    }
    match tile {
        Tile::Placeholder(lines) => draw_placeholder(canvas, cell, lines, scale),
        Tile::Picture(img) => {
            fill(canvas, cell, FRAME);
            let inner = cell.inset(1);
            let (tw, th) = fit((img.width(), img.height()), (inner.w, inner.h));
            let scaled = if tw < img.width() || th < img.height() {
                img.thumbnail_exact(tw, th)
            } else {
                img.resize_exact(tw, th, FilterType::Nearest)
            }
            .to_rgb8();
            let x = inner.x + (inner.w - tw) / 2;
            let y = inner.y + (inner.h - th) / 2;
            image::imageops::replace(canvas, &scaled, i64::from(x), i64::from(y));
        }
    }
}

fn draw_placeholder(canvas: &mut RgbImage, cell: Rect, lines: &[String], scale: u32) {
    fill(canvas, cell, PLACEHOLDER_BG);
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let longest = u32::try_from(longest).unwrap_or(u32::MAX).max(1);
    let scale = scale.min(cell.w / (8 * longest)).max(1);
    let line_h = 10 * scale;
    let block_h = u32::try_from(lines.len()).unwrap_or(1) * line_h;
    let mut y = cell.y + cell.h.saturating_sub(block_h) / 2;
    let fits = usize::try_from(cell.w / (8 * scale)).unwrap_or(usize::MAX);
    for line in lines {
        let line: String = line.chars().take(fits).collect();
        let text_w = u32::try_from(line.len()).unwrap_or(0) * 8 * scale;
        let x = cell.x + cell.w.saturating_sub(text_w) / 2;
        draw_text(canvas, x, y, scale, &line, PLACEHOLDER_FG, cell.y + cell.h);
        y += line_h;
    }
}

/// Largest size with the source's aspect ratio that fits in `bounds` (at least 1×1).
fn fit((sw, sh): (u32, u32), (bw, bh): (u32, u32)) -> (u32, u32) {
    let (sw, sh, bw, bh) = (
        u64::from(sw.max(1)),
        u64::from(sh.max(1)),
        u64::from(bw.max(1)),
        u64::from(bh.max(1)),
    );
    let (w, h) = if sw * bh >= sh * bw {
        (bw, (sh * bw / sw).max(1))
    } else {
        ((sw * bh / sh).max(1), bh)
    };
    (u32::try_from(w).unwrap_or(1), u32::try_from(h).unwrap_or(1))
}

fn fill(canvas: &mut RgbImage, r: Rect, color: Rgb<u8>) {
    let x_end = r.x.saturating_add(r.w).min(canvas.width());
    let y_end = r.y.saturating_add(r.h).min(canvas.height());
    for y in r.y..y_end {
        for x in r.x..x_end {
            canvas.put_pixel(x, y, color);
        }
    }
}

/// Draws `text` with the 8×8 bitmap font at `scale`, clipped to the canvas and `y_limit`.
fn draw_text(
    canvas: &mut RgbImage,
    x: u32,
    y: u32,
    scale: u32,
    text: &str,
    color: Rgb<u8>,
    y_limit: u32,
) {
    let unknown = usize::from(b'?');
    for (i, ch) in text.chars().enumerate() {
        let code = usize::try_from(u32::from(ch)).unwrap_or(unknown);
        let glyph = BASIC_LEGACY
            .get(code)
            .or_else(|| BASIC_LEGACY.get(unknown))
            .copied()
            .unwrap_or_default();
        let gx = u32::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(8 * scale))
            .and_then(|off| x.checked_add(off));
        let Some(gx) = gx else { return };
        if gx >= canvas.width() {
            return;
        }
        for (row, bits) in (0u32..).zip(glyph) {
            for col in 0..8u32 {
                // font8x8 stores the leftmost pixel in bit 0.
                if bits >> col & 1 == 1 {
                    let py = y + row * scale;
                    let cell = Rect {
                        x: gx + col * scale,
                        y: py,
                        w: scale,
                        h: scale.min(y_limit.saturating_sub(py)),
                    };
                    fill(canvas, cell, color);
                }
            }
        }
    }
}

fn encode_png(canvas: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, PngFilter::Adaptive)
        .write_image(
            canvas.as_raw(),
            canvas.width(),
            canvas.height(),
            image::ExtendedColorType::Rgb8,
        )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn png_of(w: u32, h: u32, color: [u8; 3]) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, Rgb(color));
        encode_png(&img).unwrap()
    }

    fn job(ratio: (u32, u32), inputs: Vec<InputImage>, count: usize) -> RenderJob {
        RenderJob {
            ratio,
            long_side: 256,
            prompt_label: banner_label("a model in a red dress, 全身"),
            count,
            inputs: Arc::from(inputs),
        }
    }

    #[test]
    fn canvas_follows_the_ratio() {
        assert_eq!(canvas_size((16, 9), 512), (512, 288));
        assert_eq!(canvas_size((9, 16), 512), (288, 512));
        assert_eq!(canvas_size((1, 1), 512), (512, 512));
        assert_eq!(canvas_size((21, 9), 16), (16, 7));
    }

    #[test]
    fn banner_label_is_ascii_and_short() {
        assert_eq!(banner_label("héllo"), "h?llo");
        assert_eq!(banner_label(&"x".repeat(100)).len(), BANNER_PROMPT_CHARS);
    }

    #[test]
    fn model_is_drawn_large_with_its_colours() {
        let red = png_of(40, 60, [250, 0, 0]);
        let blue = png_of(30, 30, [0, 0, 250]);
        let pngs = render_all(&job(
            (4, 3),
            vec![InputImage::Encoded(red), InputImage::Encoded(blue)],
            2,
        ))
        .unwrap();
        assert_eq!(pngs.len(), 2);
        assert_ne!(pngs[0], pngs[1]);
        let img = image::load_from_memory(&pngs[0]).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (256, 192));
        let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        let (reds, blues) = (count([250, 0, 0]), count([0, 0, 250]));
        assert!(reds > blues && blues > 100, "red {reds} blue {blues}");
    }

    #[test]
    fn bad_inputs_become_placeholders() {
        let pngs = render_all(&job(
            (9, 16),
            vec![
                InputImage::Encoded(b"not an image".to_vec()),
                InputImage::Url {
                    host: "cdn.example".into(),
                },
                InputImage::Undecodable,
            ],
            1,
        ))
        .unwrap();
        let img = image::load_from_memory(&pngs[0]).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (144, 256));
        assert!(img.pixels().any(|p| *p == PLACEHOLDER_BG));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_layout_renders(
            ri in 0usize..10, long in 16u32..200, k in 0usize..6, count in 1usize..3,
            garbage in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let ratio = crate::validate::ASPECT_RATIOS[ri];
            let mut inputs = vec![InputImage::Encoded(garbage)];
            for i in 0..k {
                inputs.push(InputImage::Encoded(png_of(1 + i as u32 * 7, 3, [9, 9, 9])));
            }
            let j = RenderJob { long_side: long, ..job(ratio, inputs, count) };
            let pngs = render_all(&j).unwrap();
            let img = image::load_from_memory(&pngs[0]).unwrap();
            prop_assert_eq!((img.width(), img.height()), canvas_size(ratio, long));
        }
    }
}
