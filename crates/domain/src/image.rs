//! Input images: a base64 data URI (RFC 2397) decoded and checked, or an
//! `http://` or `https://` URL that Apimart fetches (docs/legacy.md, "Images",
//! for what the earlier service accepted and why GIF and BMP are not).
//!
//! Data URIs are decoded strictly: the standard base64 alphabet with canonical
//! padding (RFC 4648 §4), so that a corrupted or URL-safe-encoded upload fails
//! here with a clear message instead of turning into a broken image upstream.
//! The one tolerance is whitespace (CR, LF, space, tab), because Java's
//! `Base64.getMimeEncoder()` breaks lines every 76 characters. The decoded
//! bytes must start with the magic bytes of the declared type.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// Longest accepted image URL, in characters, both as sent and once
/// normalised. 2048 is the common practical limit of browsers, CDNs and
/// object stores; longer URLs are almost always mistakes (or embedded data).
pub const MAX_IMAGE_URL_CHARS: usize = 2048;

/// How many characters of a rejected media type an error repeats, so an error
/// message stays short whatever the client sent.
const MAX_ECHOED_CHARS: usize = 64;

/// Default of [`PixelBudget::max_pixels`]: 40 megapixels, twice a 6000 × 4000
/// camera photo. Decoded as 8-bit RGBA that is 160 MB, the most an image may
/// cost whoever decodes it (the upstream, or a client viewing a result).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Default of [`PixelBudget::max_side`]: 8192 pixels, the largest texture side
/// common GPUs and browsers' canvases handle, far above any model photo.
pub const DEFAULT_MAX_SIDE: u32 = 8192;

/// The largest image accepted, judged by the width and height its header
/// declares (no decoding): at most `max_side` pixels on either side and at
/// most `max_pixels` pixels in all. It stops decompression bombs, such as a
/// 225-byte PNG that declares 50 000 × 50 000 pixels, before anything
/// decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelBudget {
    max_pixels: u64,
    max_side: u32,
}

impl PixelBudget {
    /// A budget of `max_pixels` pixels in all and `max_side` pixels a side;
    /// `None` when either is 0.
    pub fn new(max_pixels: u64, max_side: u32) -> Option<PixelBudget> {
        (max_pixels > 0 && max_side > 0).then_some(PixelBudget {
            max_pixels,
            max_side,
        })
    }

    /// Most pixels in all (width × height).
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
    }

    /// Most pixels on either side.
    pub fn max_side(&self) -> u32 {
        self.max_side
    }

    /// Checks declared dimensions against the budget (the product cannot
    /// overflow: it is computed in 128 bits).
    ///
    /// # Errors
    /// [`PixelBudgetExceeded`] when a side or the area is over the limit.
    pub fn check(&self, width: u64, height: u64) -> Result<(), PixelBudgetExceeded> {
        let side = u64::from(self.max_side);
        let area = u128::from(width) * u128::from(height);
        if width > side || height > side || area > u128::from(self.max_pixels) {
            return Err(PixelBudgetExceeded {
                width,
                height,
                max_pixels: self.max_pixels,
                max_side: self.max_side,
            });
        }
        Ok(())
    }
}

impl Default for PixelBudget {
    /// [`DEFAULT_MAX_PIXELS`] and [`DEFAULT_MAX_SIDE`].
    fn default() -> Self {
        PixelBudget {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_side: DEFAULT_MAX_SIDE,
        }
    }
}

/// An image whose declared dimensions are over a [`PixelBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "image declares {width} × {height} pixels, over the limit of {max_side} pixels a side and {max_pixels} pixels in all"
)]
pub struct PixelBudgetExceeded {
    /// Declared width, pixels.
    pub width: u64,
    /// Declared height, pixels.
    pub height: u64,
    /// The budget's limit in all, pixels.
    pub max_pixels: u64,
    /// The budget's limit a side, pixels.
    pub max_side: u32,
}

/// The width and height an image header declares, read without decoding the
/// image (`imagesize` reads PNG's IHDR, JPEG's SOF marker, WebP's VP8/VP8L/VP8X
/// header, and the headers of the other formats it knows). `None` when the
/// bytes are not an image it knows or the header is cut off.
pub fn declared_dimensions(bytes: &[u8]) -> Option<(u64, u64)> {
    imagesize::blob_size(bytes)
        .ok()
        .map(|size| (size.width as u64, size.height as u64))
}

/// An image type accepted in a data URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageMime {
    /// `image/png`.
    Png,
    /// `image/jpeg` (`image/jpg` accepted as an alias).
    Jpeg,
    /// `image/webp`.
    Webp,
}

impl ImageMime {
    /// Every accepted type.
    pub const ALL: [ImageMime; 3] = [ImageMime::Png, ImageMime::Jpeg, ImageMime::Webp];

    /// The canonical media type, e.g. `image/png`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ImageMime::Png => "image/png",
            ImageMime::Jpeg => "image/jpeg",
            ImageMime::Webp => "image/webp",
        }
    }

    /// The usual file extension without the dot: `png`, `jpg` or `webp`.
    pub fn extension(&self) -> &'static str {
        match self {
            ImageMime::Png => "png",
            ImageMime::Jpeg => "jpg",
            ImageMime::Webp => "webp",
        }
    }

    /// A media type in any ASCII case (`image/PNG`, `image/jpg` …), or `None`
    /// for anything else. No parameters, no surrounding spaces.
    pub fn from_media_type(media_type: &str) -> Option<ImageMime> {
        const NAMES: [(&str, ImageMime); 4] = [
            ("image/png", ImageMime::Png),
            ("image/jpeg", ImageMime::Jpeg),
            ("image/jpg", ImageMime::Jpeg),
            ("image/webp", ImageMime::Webp),
        ];
        NAMES
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(media_type))
            .map(|(_, mime)| mime)
    }

    /// The type the leading magic bytes announce: PNG `89 50 4E 47 0D 0A 1A 0A`,
    /// JPEG `FF D8 FF`, WebP `RIFF` + 4-byte size + `WEBP`; `None` otherwise.
    pub fn sniff(bytes: &[u8]) -> Option<ImageMime> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF];
        if bytes.starts_with(PNG) {
            Some(ImageMime::Png)
        } else if bytes.starts_with(JPEG) {
            Some(ImageMime::Jpeg)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(ImageMime::Webp)
        } else {
            None
        }
    }

    /// The format's everyday name, for messages: `PNG`, `JPEG`, `WebP`.
    fn name(&self) -> &'static str {
        match self {
            ImageMime::Png => "PNG",
            ImageMime::Jpeg => "JPEG",
            ImageMime::Webp => "WebP",
        }
    }
}

impl fmt::Display for ImageMime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ImageMime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ImageMime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ImageMime::from_media_type(&s)
            .ok_or_else(|| serde::de::Error::custom(ImageInputError::unsupported(&s)))
    }
}

/// Image bytes decoded from a data URI, whose magic bytes match `mime`.
/// Never empty.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedImage {
    mime: ImageMime,
    bytes: Vec<u8>,
    width: u64,
    height: u64,
}

impl DecodedImage {
    /// The checked image type.
    pub fn mime(&self) -> ImageMime {
        self.mime
    }

    /// The decoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The decoded bytes, taken out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Size of the decoded bytes, in bytes (at least 1).
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Width and height in pixels, as the header declares them (each at least 1).
    pub fn dimensions(&self) -> (u64, u64) {
        (self.width, self.height)
    }

    /// The image as a canonical data URI: `data:<mime>;base64,<standard padded base64>`
    /// on one line.
    pub fn to_data_uri(&self) -> String {
        format!("data:{};base64,{}", self.mime, STANDARD.encode(&self.bytes))
    }
}

impl fmt::Debug for DecodedImage {
    /// Type and size only: the bytes are large and useless in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedImage")
            .field("mime", &self.mime)
            .field("size_bytes", &self.bytes.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// An absolute `http://` or `https://` URL with a public host, no user name
/// or password, at most [`MAX_IMAGE_URL_CHARS`] characters. Kept in the `url`
/// crate's normalised form.
///
/// modelgen never fetches these: it passes them to Apimart, which downloads
/// them. The host check is therefore about not pointing the upstream at its own
/// network: `localhost`, names that only resolve inside a network, and IP
/// literals of loopback, private, link-local, shared, multicast and reserved
/// ranges (IPv4 and IPv6, including IPv4-mapped and -embedded forms) are
/// refused. Names are not resolved here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageUrl(Url);

/// The former name of [`ImageUrl`], from when only `https://` was accepted.
pub type HttpsUrl = ImageUrl;

impl ImageUrl {
    /// Parses an `http://` or `https://` URL (scheme in any case).
    ///
    /// # Errors
    /// [`ImageInputError::NotDataUriOrUrl`] for any other scheme or none,
    /// [`ImageInputError::InvalidUrl`] when it is too long, malformed, has no
    /// host or an internal one, or carries credentials.
    pub fn parse(s: &str) -> Result<ImageUrl, ImageInputError> {
        let s = s.trim_ascii();
        if !(starts_with_ignore_case(s, "https://") || starts_with_ignore_case(s, "http://")) {
            return Err(ImageInputError::NotDataUriOrUrl);
        }
        // `nth` stops after MAX + 1 characters, so a huge string costs nothing.
        if s.chars().nth(MAX_IMAGE_URL_CHARS).is_some() {
            return Err(InvalidUrlReason::TooLong {
                max: MAX_IMAGE_URL_CHARS,
            }
            .into());
        }
        let url = Url::parse(s).map_err(InvalidUrlReason::Malformed)?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(ImageInputError::NotDataUriOrUrl);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidUrlReason::MissingHost.into());
        }
        if is_internal_host(url.host()) {
            return Err(InvalidUrlReason::InternalHost.into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidUrlReason::HasCredentials.into());
        }
        if url.as_str().chars().count() > MAX_IMAGE_URL_CHARS {
            return Err(InvalidUrlReason::TooLong {
                max: MAX_IMAGE_URL_CHARS,
            }
            .into());
        }
        Ok(ImageUrl(url))
    }

    /// Whether the URL is `https://` (the image travels encrypted).
    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// The normalised URL text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL for logs: scheme, host, port and path, with the query replaced
    /// by `?…` and the fragment dropped, because signed object-store URLs carry
    /// their credentials in the query.
    pub fn redacted(&self) -> String {
        let mut out = format!("{}://{}", self.0.scheme(), self.0.host_str().unwrap_or(""));
        if let Some(port) = self.0.port() {
            out.push_str(&format!(":{port}"));
        }
        out.push_str(self.0.path());
        if self.0.query().is_some() {
            out.push_str("?…");
        }
        out
    }
}

impl fmt::Display for ImageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageUrl {
    type Err = ImageInputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageUrl::parse(s)
    }
}

impl Serialize for ImageUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An input image as sent by a client (`user_image`, `outfit_images[i]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageInput {
    /// A `data:image/…;base64,…` URI, decoded and checked.
    DataUri(DecodedImage),
    /// An `http://` or `https://` URL, passed on to Apimart as is.
    Url(ImageUrl),
}

impl ImageInput {
    /// Parses a data URI or an `http://`/`https://` URL; surrounding ASCII
    /// whitespace is ignored. `max_bytes` caps the decoded size of a data URI.
    ///
    /// A data URI is `data:<media type>[;<parameter>…];base64,<data>` with the
    /// scheme, media type and `base64` marker in any ASCII case; the media type
    /// is `image/png`, `image/jpeg` (or `image/jpg`) or `image/webp`; any
    /// parameters (`charset=`, `name=` …) before `;base64` are ignored. The
    /// data is standard base64 with canonical padding; CR, LF, space and tab
    /// anywhere in it are removed first.
    ///
    /// The size is checked on the encoded length before anything is decoded
    /// or copied, so an oversized string is refused at the cost of one scan.
    /// The dimensions the image header declares must fit the default
    /// [`PixelBudget`]; [`ImageInput::parse_within`] takes another.
    ///
    /// # Errors
    /// See [`ImageInputError`]; the variants are checked in this order:
    /// form (`NotDataUriOrUrl`), `UnsupportedMediaType`, `NotBase64Encoded`,
    /// `Empty`, `TooLarge`, `InvalidBase64`, `MimeMismatch`, `Corrupt` (no
    /// readable size), `TooManyPixels`, `Corrupt` (cut off); for URLs
    /// `InvalidUrl`.
    pub fn parse(s: &str, max_bytes: usize) -> Result<ImageInput, ImageInputError> {
        ImageInput::parse_within(s, max_bytes, PixelBudget::default())
    }

    /// As [`ImageInput::parse`], with the dimensions of a data URI's image
    /// checked against `pixels`. Only the header is read: the image is never
    /// decoded. A URL's image is not seen here (Apimart fetches it).
    ///
    /// # Errors
    /// As [`ImageInput::parse`].
    pub fn parse_within(
        s: &str,
        max_bytes: usize,
        pixels: PixelBudget,
    ) -> Result<ImageInput, ImageInputError> {
        let s = s.trim_ascii();
        if starts_with_ignore_case(s, "data:") {
            parse_data_uri(&s[5..], max_bytes, pixels).map(ImageInput::DataUri)
        } else {
            ImageUrl::parse(s).map(ImageInput::Url)
        }
    }

    /// The decoded image of a data URI, `None` for a URL.
    pub fn as_decoded(&self) -> Option<&DecodedImage> {
        match self {
            ImageInput::DataUri(image) => Some(image),
            ImageInput::Url(_) => None,
        }
    }

    /// The URL, `None` for a data URI.
    pub fn as_url(&self) -> Option<&ImageUrl> {
        match self {
            ImageInput::DataUri(_) => None,
            ImageInput::Url(url) => Some(url),
        }
    }

    /// A data URI re-encoded canonically (one line, standard padded base64,
    /// canonical media type); `None` for a URL.
    pub fn to_data_uri(&self) -> Option<String> {
        self.as_decoded().map(DecodedImage::to_data_uri)
    }

    /// A short description for logs that never contains image data or URL
    /// queries: `data:image/png;base64,<12345 bytes>` or `https://host/path?…`
    /// (or `http://…`).
    pub fn redacted(&self) -> String {
        match self {
            ImageInput::DataUri(image) => {
                format!("data:{};base64,<{} bytes>", image.mime, image.bytes.len())
            }
            ImageInput::Url(url) => url.redacted(),
        }
    }
}

/// Why a string is not an acceptable input image. Every variant's message is a
/// plain-English sentence fragment fit for a `FieldError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageInputError {
    /// Neither `data:` nor `http://` or `https://` at the start, or a data
    /// URI without the comma that separates header and data.
    #[error(
        "must be a data URI such as `data:image/png;base64,iVBORw0…` or an `https://` (or `http://`) URL"
    )]
    NotDataUriOrUrl,
    /// The data URI declares a media type other than PNG, JPEG or WebP. Holds
    /// the declared type (at most 64 characters; empty when none was given).
    #[error("{}", unsupported_message(.0))]
    UnsupportedMediaType(String),
    /// The data URI is not marked `;base64` right before the comma.
    #[error("data URI must be base64-encoded: write `;base64,` before the data")]
    NotBase64Encoded,
    /// The data is not strict standard base64.
    #[error("image data is not valid standard base64: {reason}{}", at_position(.position))]
    InvalidBase64 {
        /// Byte offset of the offending character in the data part (after the
        /// comma, counting whitespace), when one character is to blame.
        position: Option<usize>,
        /// What is wrong, e.g. `invalid character`.
        reason: &'static str,
    },
    /// The data URI has no data after the comma.
    #[error("data URI contains no image data")]
    Empty,
    /// The decoded bytes are not an image of the declared type.
    #[error("data URI declares {declared} but the data is {}", detected_message(.detected))]
    MimeMismatch {
        /// The type in the data URI header.
        declared: ImageMime,
        /// The type the magic bytes show, `None` if not PNG, JPEG or WebP.
        detected: Option<ImageMime>,
    },
    /// The bytes start like the declared type but the file is truncated or
    /// corrupt (no readable width and height, or not ending like a complete file).
    #[error("image data is a truncated or corrupt {declared}")]
    Corrupt {
        /// The type in the data URI header.
        declared: ImageMime,
    },
    /// The decoded image is larger than allowed. Rejected from the encoded
    /// length, before decoding, so `bytes` is the size the data would decode to.
    #[error("image is {bytes} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// Decoded size in bytes.
        bytes: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An `http://` or `https://` URL that cannot be used.
    #[error("image URL is invalid: {0}")]
    InvalidUrl(#[from] InvalidUrlReason),
    /// The image header declares more pixels than the [`PixelBudget`] allows
    /// (a decompression bomb, or simply a needlessly huge image).
    #[error("{0}")]
    TooManyPixels(#[from] PixelBudgetExceeded),
}

impl ImageInputError {
    /// Whether the error is a size problem (the API answers 413 / code 1007
    /// rather than 400 / 1001).
    pub fn is_too_large(&self) -> bool {
        matches!(self, ImageInputError::TooLarge { .. })
    }

    fn unsupported(media_type: &str) -> Self {
        ImageInputError::UnsupportedMediaType(media_type.chars().take(MAX_ECHOED_CHARS).collect())
    }
}

/// Why an `http://` or `https://` URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUrlReason {
    /// Longer than [`MAX_IMAGE_URL_CHARS`].
    #[error("longer than {max} characters")]
    TooLong {
        /// The limit in characters.
        max: usize,
    },
    /// Not a well-formed URL.
    #[error("{0}")]
    Malformed(url::ParseError),
    /// No host name.
    #[error("it has no host")]
    MissingHost,
    /// `localhost`, a name that only resolves inside a network, or an IP
    /// literal no public image can live at (see [`is_internal_ip`]): the
    /// upstream would be asked to fetch from its own network (server-side
    /// request forgery).
    #[error("it must name a public host, not a local or private address")]
    InternalHost,
    /// A user name or password in the URL; credentials must not travel in URLs
    /// (they would end up in logs and upstream requests).
    #[error("it must not contain a user name or password")]
    HasCredentials,
}

/// Host-name suffixes that only resolve inside a network: `localhost`
/// (RFC 6761), `local` (mDNS, RFC 6762), `internal` (reserved for private use
/// by ICANN, and where cloud metadata services live, e.g.
/// `metadata.google.internal`) and `home.arpa` (RFC 8375).
const INTERNAL_SUFFIXES: [&str; 4] = ["localhost", "local", "internal", "home.arpa"];

/// Whether `host` is a name that only resolves inside a network (see
/// [`INTERNAL_SUFFIXES`]; also any single-label name such as `metadata` or
/// `intranet`), or an IP literal for which [`is_internal_ip`] holds.
fn is_internal_host(host: Option<url::Host<&str>>) -> bool {
    match host {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            !d.contains('.')
                || INTERNAL_SUFFIXES
                    .iter()
                    .any(|s| d == *s || d.ends_with(&format!(".{s}")))
        }
        Some(url::Host::Ipv4(ip)) => is_internal_ip(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal_ip(std::net::IpAddr::V6(ip)),
        None => true,
    }
}

/// Whether `ip` is an address no public image can live at: loopback, private, shared
/// (100.64/10, Aliyun's metadata service), link-local (cloud metadata at
/// 169.254.169.254), multicast, documentation, reserved, and any IPv6 form carrying
/// such an IPv4 address (`::ffff:a.b.c.d`, NAT64, 6to4). The same classification
/// judges every address the service itself downloads from
/// ([`modelgen_outbound::classify`], docs/outbound.md), so an input URL and a result
/// URL are refused for the same reasons.
pub fn is_internal_ip(ip: std::net::IpAddr) -> bool {
    modelgen_outbound::classify(ip).is_some()
}

fn unsupported_message(media_type: &str) -> String {
    if media_type.is_empty() {
        "data URI has no media type; use image/png, image/jpeg or image/webp".to_owned()
    } else {
        format!(
            "media type `{media_type}` is not supported; use image/png, image/jpeg or image/webp"
        )
    }
}

fn at_position(position: &Option<usize>) -> String {
    position.map_or_else(String::new, |p| format!(" at position {p} of the data"))
}

fn detected_message(detected: &Option<ImageMime>) -> String {
    match detected {
        Some(mime) => format!("a {} image", mime.name()),
        None => "not a PNG, JPEG or WebP image".to_owned(),
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whitespace removed from base64 data before decoding: what MIME encoders
/// insert (CRLF every 76 characters) and what hand-wrapped text adds.
fn is_tolerated_whitespace(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t')
}

/// Parses what follows `data:`.
fn parse_data_uri(
    rest: &str,
    max_bytes: usize,
    pixels: PixelBudget,
) -> Result<DecodedImage, ImageInputError> {
    let (header, data) = rest
        .split_once(',')
        .ok_or(ImageInputError::NotDataUriOrUrl)?;
    let (media_type, params) = header.split_once(';').unwrap_or((header, ""));
    let declared = ImageMime::from_media_type(media_type)
        .ok_or_else(|| ImageInputError::unsupported(media_type))?;
    let is_base64 = !params.is_empty()
        && params
            .rsplit(';')
            .next()
            .is_some_and(|last| last.eq_ignore_ascii_case("base64"));
    if !is_base64 {
        return Err(ImageInputError::NotBase64Encoded);
    }

    let data = data.as_bytes();
    let symbols = data
        .iter()
        .filter(|b| !is_tolerated_whitespace(**b))
        .count();
    if symbols == 0 {
        return Err(ImageInputError::Empty);
    }
    // Every 4 symbols carry 3 bytes, less one per padding `=`; exact for valid
    // input and an estimate for invalid input, which fails decoding anyway.
    let padding = data
        .iter()
        .rev()
        .filter(|b| !is_tolerated_whitespace(**b))
        .take_while(|b| **b == b'=')
        .take(2)
        .count();
    let decoded_len = (symbols - padding).saturating_mul(3) / 4;
    if decoded_len > max_bytes {
        return Err(ImageInputError::TooLarge {
            bytes: decoded_len,
            max: max_bytes,
        });
    }

    let compact: Cow<'_, [u8]> = if symbols == data.len() {
        Cow::Borrowed(data)
    } else {
        Cow::Owned(
            data.iter()
                .copied()
                .filter(|b| !is_tolerated_whitespace(*b))
                .collect(),
        )
    };
    let bytes = STANDARD
        .decode(&compact)
        .map_err(|e| base64_error(e, data))?;
    if bytes.is_empty() {
        return Err(ImageInputError::Empty);
    }
    if bytes.len() > max_bytes {
        return Err(ImageInputError::TooLarge {
            bytes: bytes.len(),
            max: max_bytes,
        });
    }
    match ImageMime::sniff(&bytes) {
        Some(detected) if detected == declared => {}
        detected => return Err(ImageInputError::MimeMismatch { declared, detected }),
    }
    // Magic bytes alone would let a cut-off file through: the header must
    // also state a non-empty size.
    let (width, height) = match declared_dimensions(&bytes) {
        Some((w, h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(ImageInputError::Corrupt { declared }),
    };
    pixels.check(width, height)?;
    if !ends_complete(declared, &bytes) {
        return Err(ImageInputError::Corrupt { declared });
    }
    Ok(DecodedImage {
        mime: declared,
        bytes,
        width,
        height,
    })
}

/// Test support: returns a copy of the complete image file `file` with a
/// private chunk carrying `extra` inserted where readers skip it (a PNG
/// ancillary chunk before `IEND`, a JPEG comment before EOI, an unknown WebP
/// RIFF chunk). The result is still a complete file of the same type; tests
/// use it to vary the length of valid images. Chunk CRCs are left zero.
#[doc(hidden)]
pub fn with_private_chunk(mime: ImageMime, file: &[u8], extra: &[u8]) -> Vec<u8> {
    let len = u32::try_from(extra.len()).unwrap_or(u32::MAX);
    match mime {
        ImageMime::Png => {
            let (body, iend) = file.split_at(file.len().saturating_sub(12));
            let mut b = body.to_vec();
            b.extend(len.to_be_bytes());
            b.extend(b"prVt");
            b.extend(extra);
            b.extend([0, 0, 0, 0]);
            b.extend(iend);
            b
        }
        ImageMime::Jpeg => {
            let (body, eoi) = file.split_at(file.len().saturating_sub(2));
            let mut b = body.to_vec();
            b.extend([0xFF, 0xFE]);
            b.extend(
                u16::try_from(extra.len() + 2)
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            b.extend(extra);
            b.extend(eoi);
            b
        }
        ImageMime::Webp => {
            let mut b = file.to_vec();
            b.extend(b"JUNK");
            b.extend(len.to_le_bytes());
            b.extend(extra);
            if extra.len() % 2 == 1 {
                b.push(0);
            }
            let riff = u32::try_from(b.len() - 8).unwrap_or(u32::MAX);
            if let Some(size) = b.get_mut(4..8) {
                size.copy_from_slice(&riff.to_le_bytes());
            }
            b
        }
    }
}

/// Whether the file ends the way a complete file of its type ends, a cheap
/// check against truncated uploads that needs no decoding: PNG's last chunk is
/// `IEND` (PNG spec §11.2.5), JPEG ends with the EOI marker `FF D9` (ITU T.81
/// B.2.1; a few padding bytes after it are tolerated), and a WebP file's RIFF
/// size field covers the whole file (RIFF chunks are padded to even length).
fn ends_complete(mime: ImageMime, bytes: &[u8]) -> bool {
    /// Padding bytes some JPEG writers leave after EOI.
    const JPEG_TRAILER_SLACK: usize = 32;
    match mime {
        ImageMime::Png => {
            bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82])
        }
        ImageMime::Jpeg => {
            let tail = &bytes[bytes.len().saturating_sub(JPEG_TRAILER_SLACK)..];
            tail.windows(2).any(|w| w == [0xFF, 0xD9])
        }
        ImageMime::Webp => bytes
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .and_then(|riff| usize::try_from(riff).ok())
            .is_some_and(|riff| {
                let declared = riff.saturating_add(8);
                declared == bytes.len() || declared + 1 == bytes.len()
            }),
    }
}

/// Maps a decoder error to ours, with offsets counted in the original data
/// (whitespace included) so the client can find the character.
fn base64_error(error: base64::DecodeError, data: &[u8]) -> ImageInputError {
    let original = |symbol_index: usize| {
        data.iter()
            .enumerate()
            .filter(|(_, b)| !is_tolerated_whitespace(**b))
            .nth(symbol_index)
            .map(|(i, _)| i)
    };
    let (position, reason) = match error {
        base64::DecodeError::InvalidByte(offset, b'=') => (
            original(offset),
            "padding `=` is only allowed at the very end",
        ),
        base64::DecodeError::InvalidByte(offset, b'-' | b'_') => (
            original(offset),
            "URL-safe characters `-` and `_` are not allowed; use the standard alphabet with `+` and `/`",
        ),
        base64::DecodeError::InvalidByte(offset, _) => (original(offset), "invalid character"),
        base64::DecodeError::InvalidLength(_) => (
            None,
            "the length is not a multiple of 4 (truncated data or missing `=` padding)",
        ),
        base64::DecodeError::InvalidLastSymbol { offset, .. } => (
            original(offset),
            "the last character has bits set that carry no data (non-canonical encoding)",
        ),
        base64::DecodeError::InvalidPadding => (
            None,
            "wrong `=` padding (missing, or more than the data needs)",
        ),
    };
    ImageInputError::InvalidBase64 { position, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PNG: &[u8] = include_bytes!("../tests/fixtures/tiny.png");
    const JPEG: &[u8] = include_bytes!("../tests/fixtures/tiny.jpg");
    const WEBP: &[u8] = include_bytes!("../tests/fixtures/tiny.webp");
    const PHOTO: &[u8] = include_bytes!("../tests/fixtures/person_front.jpg");
    const MAX: usize = 1 << 20;

    fn uri(mime: &str, bytes: &[u8]) -> String {
        format!("data:{mime};base64,{}", STANDARD.encode(bytes))
    }

    #[test]
    fn the_pixel_budget_limits_each_side_and_the_area_without_overflow() {
        let budget = PixelBudget::default();
        assert_eq!((budget.max_pixels(), budget.max_side()), (40_000_000, 8192));
        assert!(budget.check(8192, 4882).is_ok(), "39 993 344 pixels fit");
        assert!(budget.check(1, 1).is_ok());
        let over = budget.check(8192, 4883).unwrap_err();
        assert_eq!((over.width, over.height), (8192, 4883));
        assert!(budget.check(8193, 1).is_err(), "one side too long");
        assert!(budget.check(1, 8193).is_err());
        assert!(budget.check(u64::MAX, u64::MAX).is_err());
        assert_eq!(
            budget.check(50_000, 50_000).unwrap_err().to_string(),
            "image declares 50000 × 50000 pixels, over the limit of 8192 pixels a side and 40000000 pixels in all"
        );
        assert_eq!(PixelBudget::new(0, 1), None);
        assert_eq!(PixelBudget::new(1, 0), None);
    }

    #[test]
    fn a_data_uri_over_the_pixel_budget_is_refused_naming_its_size() {
        let (w, h) = declared_dimensions(PHOTO).unwrap();
        let budget = PixelBudget::new(w * h, u32::try_from(w.max(h)).unwrap()).unwrap();
        let input = ImageInput::parse_within(&uri("image/jpeg", PHOTO), MAX, budget).unwrap();
        assert_eq!(input.as_decoded().unwrap().dimensions(), (w, h));
        let tight = PixelBudget::new(w * h - 1, 100_000).unwrap();
        match ImageInput::parse_within(&uri("image/jpeg", PHOTO), MAX, tight) {
            Err(ImageInputError::TooManyPixels(e)) => {
                assert_eq!((e.width, e.height, e.max_pixels), (w, h, w * h - 1));
            }
            other => panic!("{other:?}"),
        }
        let narrow = PixelBudget::new(u64::MAX, 10).unwrap();
        assert!(matches!(
            ImageInput::parse_within(&uri("image/jpeg", PHOTO), MAX, narrow),
            Err(ImageInputError::TooManyPixels(_))
        ));
    }

    #[test]
    fn fixtures_sniff_as_their_type() {
        assert_eq!(ImageMime::sniff(PNG), Some(ImageMime::Png));
        assert_eq!(ImageMime::sniff(JPEG), Some(ImageMime::Jpeg));
        assert_eq!(ImageMime::sniff(WEBP), Some(ImageMime::Webp));
        assert_eq!(ImageMime::sniff(PHOTO), Some(ImageMime::Jpeg));
        assert_eq!(ImageMime::sniff(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(ImageMime::sniff(b"RIFF"), None);
        assert_eq!(ImageMime::sniff(b""), None);
    }

    #[test]
    fn decodes_the_real_photo_and_re_encodes_canonically() {
        let input = ImageInput::parse(&uri("image/jpeg", PHOTO), MAX).unwrap();
        let image = input.as_decoded().unwrap();
        assert_eq!(image.mime(), ImageMime::Jpeg);
        assert_eq!(image.bytes(), PHOTO);
        assert_eq!(input.to_data_uri().unwrap(), uri("image/jpeg", PHOTO));
        assert_eq!(input.redacted(), "data:image/jpeg;base64,<51507 bytes>");
    }

    #[test]
    fn header_is_case_insensitive_and_parameters_are_ignored() {
        let b64 = STANDARD.encode(PNG);
        for header in [
            "DATA:IMAGE/PNG;BASE64",
            "data:image/png;charset=utf-8;base64",
            "data:image/png;name=front.png;base64",
            "Data:Image/Png;Base64",
        ] {
            let input = ImageInput::parse(&format!("{header},{b64}"), MAX).unwrap();
            assert_eq!(
                input.as_decoded().unwrap().mime(),
                ImageMime::Png,
                "{header}"
            );
        }
        let jpg = ImageInput::parse(&uri("image/jpg", JPEG), MAX).unwrap();
        assert_eq!(jpg.to_data_uri().unwrap(), uri("image/jpeg", JPEG));
    }

    #[test]
    fn mime_style_line_breaks_are_tolerated() {
        let b64 = STANDARD.encode(PHOTO);
        let wrapped: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let s = format!("data:image/jpeg;base64,{}\r\n", wrapped.join("\r\n"));
        let input = ImageInput::parse(&s, MAX).unwrap();
        assert_eq!(input.as_decoded().unwrap().bytes(), PHOTO);
    }

    #[test]
    fn header_errors_name_the_problem() {
        let b64 = STANDARD.encode(PNG);
        assert_eq!(
            ImageInput::parse(&format!("data:image/gif;base64,{b64}"), MAX),
            Err(ImageInputError::UnsupportedMediaType("image/gif".into()))
        );
        assert_eq!(
            ImageInput::parse(&format!("data:;base64,{b64}"), MAX)
                .unwrap_err()
                .to_string(),
            "data URI has no media type; use image/png, image/jpeg or image/webp"
        );
        assert_eq!(
            ImageInput::parse(&format!("data:image/png,{b64}"), MAX),
            Err(ImageInputError::NotBase64Encoded)
        );
        assert_eq!(
            ImageInput::parse(&format!("data:image/png;base64;name=x,{b64}"), MAX),
            Err(ImageInputError::NotBase64Encoded)
        );
        assert_eq!(
            ImageInput::parse("data:image/png;base64", MAX),
            Err(ImageInputError::NotDataUriOrUrl)
        );
        assert_eq!(
            ImageInput::parse("data:image/png;base64,", MAX),
            Err(ImageInputError::Empty)
        );
        assert_eq!(
            ImageInput::parse("data:image/png;base64,\r\n", MAX),
            Err(ImageInputError::Empty)
        );
        assert_eq!(
            ImageInput::parse(&b64, MAX),
            Err(ImageInputError::NotDataUriOrUrl),
            "bare base64 without the data: header"
        );
    }

    #[test]
    fn strict_base64_errors_point_at_the_character() {
        let mut b64 = STANDARD.encode(PNG);
        b64.replace_range(10..11, "-");
        let err = ImageInput::parse(&format!("data:image/png;base64,{b64}"), MAX).unwrap_err();
        assert!(
            matches!(
                err,
                ImageInputError::InvalidBase64 {
                    position: Some(10),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("URL-safe"), "{err}");

        // Positions count the whitespace the client sent.
        let err = ImageInput::parse("data:image/png;base64,iVBO\r\nRw0K*", MAX).unwrap_err();
        assert!(
            matches!(
                err,
                ImageInputError::InvalidBase64 {
                    position: Some(10),
                    ..
                }
            ),
            "{err:?}"
        );

        let unpadded = STANDARD.encode(PNG).trim_end_matches('=').to_owned();
        assert_ne!(unpadded.len() % 4, 0, "fixture length must need padding");
        let err = ImageInput::parse(&format!("data:image/png;base64,{unpadded}"), MAX).unwrap_err();
        assert!(
            matches!(err, ImageInputError::InvalidBase64 { position: None, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn every_ascii_character_outside_the_alphabet_and_whitespace_is_rejected() {
        let b64 = STANDARD.encode(PNG);
        for c in (0u8..128).map(char::from) {
            if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '\r' | '\n' | ' ' | '\t') {
                continue;
            }
            for at in [0, 1, b64.len() / 2, b64.len() - 1] {
                let mut data = b64.clone();
                data.insert(at, c);
                let result = ImageInput::parse(&format!("data:image/png;base64,{data}"), MAX);
                assert!(
                    matches!(result, Err(ImageInputError::InvalidBase64 { .. })),
                    "{c:?} at {at}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn magic_bytes_must_match_the_declared_type() {
        assert_eq!(
            ImageInput::parse(&uri("image/png", JPEG), MAX),
            Err(ImageInputError::MimeMismatch {
                declared: ImageMime::Png,
                detected: Some(ImageMime::Jpeg)
            })
        );
        let err = ImageInput::parse(&uri("image/webp", b"hello world!"), MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data URI declares image/webp but the data is not a PNG, JPEG or WebP image"
        );
    }

    #[test]
    fn size_is_checked_before_decoding() {
        // 40 MB of `A`s would decode to 30 MB; it is refused from its length,
        // and the garbage at the end proves nothing was decoded.
        let s = format!("data:image/png;base64,{}!", "A".repeat(40_000_000));
        assert_eq!(
            ImageInput::parse(&s, MAX),
            Err(ImageInputError::TooLarge {
                bytes: 30_000_000,
                max: MAX
            })
        );
        assert!(ImageInput::parse(&s, MAX).unwrap_err().is_too_large());
        assert_eq!(
            ImageInput::parse(&uri("image/png", PNG), PNG.len()).map(|i| i.redacted()),
            Ok(format!("data:image/png;base64,<{} bytes>", PNG.len()))
        );
        assert_eq!(
            ImageInput::parse(&uri("image/png", PNG), PNG.len() - 1),
            Err(ImageInputError::TooLarge {
                bytes: PNG.len(),
                max: PNG.len() - 1
            })
        );
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host_and_no_credentials() {
        let ok = ImageInput::parse(" HTTPS://cdn.example.com/a/b.png?sig=secret#x ", MAX).unwrap();
        let url = ok.as_url().unwrap();
        assert_eq!(url.as_str(), "https://cdn.example.com/a/b.png?sig=secret#x");
        assert_eq!(ok.redacted(), "https://cdn.example.com/a/b.png?…");
        assert_eq!(ok.to_data_uri(), None);
        assert!(url.is_https());
        assert_eq!(
            ImageUrl::parse("https://h.example:8443/p")
                .unwrap()
                .redacted(),
            "https://h.example:8443/p"
        );

        let plain = ImageInput::parse(" Http://cdn.example.com/a.png?token=t ", MAX).unwrap();
        let url = plain.as_url().unwrap();
        assert_eq!(url.as_str(), "http://cdn.example.com/a.png?token=t");
        assert!(!url.is_https());
        assert_eq!(plain.redacted(), "http://cdn.example.com/a.png?…");
        assert_eq!(
            ImageInput::parse("ftp://cdn.example.com/a.png", MAX),
            Err(ImageInputError::NotDataUriOrUrl)
        );
        assert_eq!(
            ImageInput::parse("https://user:pw@cdn.example.com/a.png", MAX),
            Err(ImageInputError::InvalidUrl(
                InvalidUrlReason::HasCredentials
            ))
        );
        assert!(matches!(
            ImageInput::parse("https://", MAX),
            Err(ImageInputError::InvalidUrl(InvalidUrlReason::Malformed(_)))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_IMAGE_URL_CHARS));
        assert_eq!(
            ImageInput::parse(&long, MAX),
            Err(ImageInputError::InvalidUrl(InvalidUrlReason::TooLong {
                max: MAX_IMAGE_URL_CHARS
            }))
        );
        let exact = format!(
            "https://example.com/{}",
            "a".repeat(MAX_IMAGE_URL_CHARS - 20)
        );
        assert_eq!(exact.len(), MAX_IMAGE_URL_CHARS);
        assert!(ImageInput::parse(&exact, MAX).is_ok());
    }

    #[test]
    fn mime_serialises_as_media_type() {
        assert_eq!(
            serde_json::to_string(&ImageMime::Webp).unwrap(),
            "\"image/webp\""
        );
        assert_eq!(
            serde_json::from_str::<ImageMime>("\"image/jpg\"").unwrap(),
            ImageMime::Jpeg
        );
        for m in ImageMime::ALL {
            assert_eq!(ImageMime::from_media_type(m.as_str()), Some(m));
        }
        assert_eq!(ImageMime::Jpeg.extension(), "jpg");
    }

    /// One of the three fixtures with a random-length private chunk of random
    /// bytes inside it, so that every base64 padding length occurs while the
    /// file stays complete.
    fn image_bytes() -> impl Strategy<Value = (ImageMime, Vec<u8>)> {
        (0usize..3, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(i, extra)| {
            let (mime, head) = [
                (ImageMime::Png, PNG),
                (ImageMime::Jpeg, JPEG),
                (ImageMime::Webp, WEBP),
            ][i];
            (mime, super::with_private_chunk(mime, head, &extra))
        })
    }

    /// Inserts `sep` after every `k` characters of `b64`.
    fn wrap(b64: &str, k: usize, sep: &str) -> String {
        b64.as_bytes()
            .chunks(k)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(sep)
    }

    proptest! {
        /// The budget holds exactly the images within both limits.
        #[test]
        fn the_pixel_budget_is_exactly_its_two_limits(
            w in 0_u64..20_000, h in 0_u64..20_000,
            max_pixels in 1_u64..100_000_000, max_side in 1_u32..20_000,
        ) {
            let budget = PixelBudget::new(max_pixels, max_side).unwrap();
            let fits = w <= u64::from(max_side) && h <= u64::from(max_side) && w * h <= max_pixels;
            prop_assert_eq!(budget.check(w, h).is_ok(), fits);
        }
    }

    proptest! {
        #[test]
        fn valid_images_with_line_breaks_every_k_chars_round_trip(
            (mime, bytes) in image_bytes(),
            k in 1usize..200,
            sep in prop_oneof![Just("\r\n"), Just("\n"), Just(" "), Just("\t"), Just("")],
        ) {
            let s = format!("data:{mime};base64,{}", wrap(&STANDARD.encode(&bytes), k, sep));
            let input = ImageInput::parse(&s, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let image = input.as_decoded().unwrap();
            prop_assert_eq!(image.mime(), mime);
            prop_assert_eq!(image.bytes(), bytes.as_slice());
            prop_assert_eq!(input.to_data_uri(), Some(uri(mime.as_str(), &bytes)));
        }

        #[test]
        fn the_size_cap_accepts_exactly_up_to_max_bytes(
            (mime, bytes) in image_bytes(),
            max in 0usize..800,
        ) {
            let result = ImageInput::parse(&uri(mime.as_str(), &bytes), max);
            if bytes.len() <= max {
                prop_assert!(result.is_ok(), "{result:?}");
            } else {
                prop_assert_eq!(result, Err(ImageInputError::TooLarge { bytes: bytes.len(), max }));
            }
        }

        #[test]
        fn declaring_another_image_type_is_a_mime_mismatch(
            (mime, bytes) in image_bytes(), other in 0usize..3,
        ) {
            let declared = ImageMime::ALL[other];
            prop_assume!(declared != mime);
            prop_assert_eq!(
                ImageInput::parse(&uri(declared.as_str(), &bytes), MAX),
                Err(ImageInputError::MimeMismatch { declared, detected: Some(mime) })
            );
        }

        #[test]
        fn url_safe_characters_are_rejected(
            (mime, bytes) in image_bytes(), at in any::<proptest::sample::Index>(), c in "[-_]",
        ) {
            let mut b64 = STANDARD.encode(&bytes);
            let i = at.index(b64.trim_end_matches('=').len());
            b64.replace_range(i..=i, &c);
            let result = ImageInput::parse(&format!("data:{mime};base64,{b64}"), MAX);
            let is_invalid_base64 = matches!(result, Err(ImageInputError::InvalidBase64 { position: Some(p), .. }) if p == i);
            prop_assert!(is_invalid_base64, "{:?}", result);
        }

        #[test]
        fn stripped_padding_is_rejected((mime, bytes) in image_bytes()) {
            prop_assume!(bytes.len() % 3 != 0);
            let b64 = STANDARD.encode(&bytes);
            let result = ImageInput::parse(&format!("data:{mime};base64,{}", b64.trim_end_matches('=')), MAX);
            let is_invalid_base64 = matches!(result, Err(ImageInputError::InvalidBase64 { .. }));
            prop_assert!(is_invalid_base64, "{:?}", result);
        }

        #[test]
        fn garbage_characters_anywhere_in_the_data_are_rejected(
            (mime, bytes) in image_bytes(),
            at in any::<proptest::sample::Index>(),
            garbage in prop_oneof![
                "[!#$%&*.:;@~\"'()\\[\\]{}<>?,|\\\\^`\u{0}\u{b}\u{c}]{1,4}",
                "[\u{80}-\u{10ffff}]{1,4}",
            ],
        ) {
            let mut b64 = STANDARD.encode(&bytes);
            let i = at.index(b64.len() + 1);
            b64.insert_str(i, &garbage);
            let result = ImageInput::parse(&format!("data:{mime};base64,{b64}"), MAX);
            let is_invalid_base64 = matches!(result, Err(ImageInputError::InvalidBase64 { .. }));
            prop_assert!(is_invalid_base64, "{:?}", result);
        }

        #[test]
        fn parsing_arbitrary_strings_never_panics(s in ".*", max in 0usize..1000) {
            let _ = ImageInput::parse(&s, max);
            let _ = ImageInput::parse(&format!("data:{s}"), max);
            let _ = ImageInput::parse(&format!("data:image/png;base64,{s}"), max);
            let _ = ImageInput::parse(&format!("https://{s}"), max);
            let _ = ImageInput::parse(&format!("http://{s}"), max);
        }

        #[test]
        fn accepted_urls_are_http_or_https_with_host_and_bounded(
            host in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,6}){1,2}",
            path in "(/[a-zA-Z0-9._~%-]{0,30}){0,5}",
            query in proptest::option::of("[a-z0-9=&]{0,40}"),
            https in any::<bool>(),
        ) {
            prop_assume!(!INTERNAL_SUFFIXES.iter().any(|s| host.ends_with(&format!(".{s}"))));
            let scheme = if https { "https" } else { "http" };
            let s = format!("{scheme}://{host}{path}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
            let url = ImageUrl::parse(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert_eq!(url.as_url().scheme(), scheme);
            prop_assert_eq!(url.is_https(), https);
            prop_assert_eq!(url.as_url().host_str(), Some(host.as_str()));
            prop_assert!(!url.redacted().contains('='));
        }

        #[test]
        fn internal_ipv4_addresses_are_refused_in_every_written_form(
            a in any::<u8>(), b in any::<u8>(), c in any::<u8>(), d in any::<u8>(),
            https in any::<bool>(),
        ) {
            let ip = std::net::Ipv4Addr::new(a, b, c, d);
            let internal = is_internal_ip(ip.into());
            let scheme = if https { "https" } else { "http" };
            let n = u32::from(ip);
            let mapped = ip.to_ipv6_mapped();
            let nat64 = std::net::Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, (n >> 16) as u16, n as u16);
            for host in [
                ip.to_string(),
                n.to_string(),
                format!("{n:#x}"),
                format!("[{mapped}]"),
                format!("[::ffff:{ip}]"),
                format!("[{nat64}]"),
            ] {
                let s = format!("{scheme}://{host}/a.png");
                let refused = matches!(
                    ImageUrl::parse(&s),
                    Err(ImageInputError::InvalidUrl(InvalidUrlReason::InternalHost))
                );
                prop_assert_eq!(refused, internal, "{}", s);
            }
        }
    }
}
