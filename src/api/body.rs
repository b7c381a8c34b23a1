//! `JsonBody<T>`: the request-body extractor of every route that takes JSON;
//! [`FormBody`]: the same for the form-encoded OAuth endpoints (RFC 7662,
//! RFC 7009).
//!
//! poem-openapi's own `Json<T>` answers every problem with a plain-text 400
//! and accepts any `application/*+json`. The contract wants finer answers
//! (415 for another media type, 413 over 64 KiB even when chunked, 400 for
//! malformed JSON, 422 with per-field problems), and register must answer 403
//! before looking at the body at all. So this extractor only captures the
//! body; the handler calls [`JsonBody::parse`] when it is ready to read it.

use std::marker::PhantomData;

use poem::{Body, Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use crate::error::{ApiError, FieldErrors};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request type that can be built from a JSON object, reporting every
/// problem per field.
pub trait FromJsonObject: Sized {
    /// Builds the value, or lists what is wrong with each field.
    fn from_json_object(object: &Map<String, Value>) -> Result<Self, FieldErrors>;
}

/// A JSON request body of type `T`, read on demand.
pub struct JsonBody<T> {
    content_type: Option<String>,
    body: Body,
    _type: PhantomData<T>,
}

impl<T: FromJsonObject> JsonBody<T> {
    /// Checks the media type, reads at most [`MAX_BODY_BYTES`], parses and
    /// validates.
    pub async fn parse(self) -> Result<T, ApiError> {
        if !self.content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = read_capped(self.body).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))
        })?;
        match value {
            Value::Object(object) => T::from_json_object(&object).map_err(ApiError::Validation),
            _ => Err(ApiError::Validation(FieldErrors::from([(
                "body".to_owned(),
                vec!["must be a JSON object".to_owned()],
            )]))),
        }
    }
}

/// Reads a whole body, at most [`MAX_BODY_BYTES`] (chunked bodies are cut
/// off here; a declared length over the limit is refused before routing).
async fn read_capped(body: Body) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    body.into_async_read()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(bytes)
}

/// Whether a `Content-Type` is `media_type`, with or without parameters
/// such as `charset`.
fn is_media_type(content_type: &str, media_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(media_type)
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(content_type: &str) -> bool {
    is_media_type(content_type, "application/json")
}

/// The media type of [`FormBody`].
pub const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// The parameters of a form-encoded body, in order, percent-decoded (bytes
/// that are not UTF-8 become U+FFFD: such a value matches no token).
#[derive(Debug, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// Parses `a=1&b=2` (`+` is a space).
    pub fn parse(bytes: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(bytes)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// The value of parameter `name`, which may be given at most once
    /// (RFC 6749 section 3.2: a repeated parameter is `invalid_request`).
    pub fn at_most_once(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(ApiError::InvalidRequest(format!(
                "the parameter `{name}` is given more than once"
            )));
        }
        Ok(first)
    }
}

/// A request type that can be built from form parameters.
pub trait FromForm: Sized {
    /// Builds the value, or says what is wrong (`400`).
    fn from_form(fields: &FormFields) -> Result<Self, ApiError>;
}

/// A form-encoded request body (`application/x-www-form-urlencoded`) of
/// type `T`, read on demand, with the limits and answers of [`JsonBody`]:
/// `415` for another media type, `413` over 64 KiB, the JSON error body.
pub struct FormBody<T> {
    content_type: Option<String>,
    body: Body,
    _type: PhantomData<T>,
}

impl<T: FromForm> FormBody<T> {
    /// Checks the media type, reads at most [`MAX_BODY_BYTES`] and builds `T`.
    pub async fn parse(self) -> Result<T, ApiError> {
        if !self
            .content_type
            .as_deref()
            .is_some_and(|c| is_media_type(c, FORM_MEDIA_TYPE))
        {
            return Err(ApiError::FormMediaTypeRequired);
        }
        let bytes = read_capped(self.body).await?;
        T::from_form(&FormFields::parse(&bytes))
    }
}

/// Both body extractors keep the raw body and its content type for the
/// handler to parse (so every parse error gets its JSON answer), and document
/// `T` as the body of their media type.
macro_rules! raw_body_extractor {
    ($extractor:ident, $media_type:expr) => {
        impl<'a, T: Type> ApiExtractor<'a> for $extractor<T> {
            const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

            type ParamType = ();
            type ParamRawType = ();

            fn register(registry: &mut Registry) {
                T::register(registry);
            }

            fn request_meta() -> Option<MetaRequest> {
                Some(MetaRequest {
                    description: None,
                    content: vec![MetaMediaType {
                        content_type: $media_type,
                        schema: T::schema_ref(),
                    }],
                    required: true,
                })
            }

            async fn from_request(
                request: &'a Request,
                body: &mut RequestBody,
                _param_opts: ExtractParamOptions<Self::ParamType>,
            ) -> poem::Result<Self> {
                Ok(Self {
                    content_type: request.content_type().map(str::to_owned),
                    body: body.take().unwrap_or_else(|_| Body::empty()),
                    _type: PhantomData,
                })
            }
        }
    };
}

raw_body_extractor!(FormBody, FORM_MEDIA_TYPE);
raw_body_extractor!(JsonBody, "application/json");

/// Longest string any field accepts, in Unicode scalar values: a backstop
/// for fields without a tighter rule of their own, so no string field is
/// ever unbounded (each field still applies its own limit, e.g. `name` 255).
pub const MAX_FIELD_CHARS: usize = 1024;

/// Longest e-mail address accepted, in bytes (RFC 5321's limit on a path,
/// less the angle brackets).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Takes a required string field, noting its problem if absent, not a
/// string, or longer than [`MAX_FIELD_CHARS`].
pub fn required_string(
    object: &Map<String, Value>,
    name: &str,
    errors: &mut FieldErrors,
) -> Option<String> {
    match object.get(name) {
        // Counting stops at the limit: a long value costs no more to refuse.
        Some(Value::String(s)) if s.chars().nth(MAX_FIELD_CHARS).is_some() => {
            add(
                errors,
                name,
                &format!("must be at most {MAX_FIELD_CHARS} characters long"),
            );
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => {
            add(errors, name, "is required");
            None
        }
        Some(_) => {
            add(errors, name, "must be a string");
            None
        }
    }
}

/// Checks a length in Unicode scalar values.
pub fn check_length(
    value: &str,
    name: &str,
    min: usize,
    max: usize,
    errors: &mut FieldErrors,
) -> bool {
    let len = value.chars().count();
    if len < min || len > max {
        add(
            errors,
            name,
            &format!("must be {min} to {max} characters long"),
        );
        return false;
    }
    true
}

/// Checks an e-mail address: a bare address (`local@domain`, RFC 5322's
/// addr-spec) of at most [`MAX_EMAIL_BYTES`] bytes, at most 64 of them before
/// the `@`, with a domain name (not a literal such as `[192.0.2.1]`).
///
/// `email_address`'s defaults also accept a display name
/// (`Anyone <ada@example.com>`) and domain literals, so one mailbox could
/// back any number of accounts under different spellings; those are refused.
pub fn check_email(value: &str, name: &str, errors: &mut FieldErrors) -> bool {
    if value.len() > MAX_EMAIL_BYTES {
        add(
            errors,
            name,
            &format!("must be at most {MAX_EMAIL_BYTES} bytes long"),
        );
        return false;
    }
    let bare_address = email_address::Options::default()
        .without_display_text()
        .without_domain_literal();
    if email_address::EmailAddress::parse_with_options(value, bare_address).is_err() {
        add(
            errors,
            name,
            "must be a valid e-mail address (local@domain, no display name)",
        );
        return false;
    }
    true
}

/// Adds a problem to a field.
pub fn add(errors: &mut FieldErrors, name: &str, problem: &str) {
    errors
        .entry(name.to_owned())
        .or_default()
        .push(problem.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email_ok(value: &str) -> bool {
        check_email(value, "email", &mut FieldErrors::new())
    }

    #[test]
    fn check_email_accepts_bare_addresses() {
        for value in [
            "ada@example.com",
            "ada.lovelace+tag@sub.example.co.uk",
            "\"quoted local\"@example.com",
            "ada@localhost",
        ] {
            assert!(email_ok(value), "{value}");
        }
    }

    #[test]
    fn check_email_refuses_display_names_literals_and_comments() {
        for value in [
            "Anyone <ada@example.com>",
            "<ada@example.com>",
            "ada@[192.0.2.1]",
            "ada@[IPv6:2001:db8::1]",
            "ada(comment)@example.com",
            "ada@example.com (comment)",
            " ada@example.com",
        ] {
            assert!(!email_ok(value), "{value}");
        }
    }

    #[test]
    fn check_email_caps_the_length() {
        let local = "l".repeat(64);
        let domain = format!("{}.{}.{}", "d".repeat(63), "d".repeat(63), "d".repeat(61));
        let longest = format!("{local}@{domain}");
        assert_eq!(longest.len(), MAX_EMAIL_BYTES);
        assert!(email_ok(&longest));
        assert!(!email_ok(&format!("{local}@{domain}d")));
        assert!(!email_ok(&format!("{local}l@example.com")));
        let mut errors = FieldErrors::new();
        check_email(&"a".repeat(60_000), "email", &mut errors);
        assert_eq!(errors["email"], ["must be at most 254 bytes long"]);
    }

    #[test]
    fn required_string_refuses_strings_over_the_backstop() {
        let object: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "at_cap": "é".repeat(MAX_FIELD_CHARS),
            "over_cap": "x".repeat(MAX_FIELD_CHARS + 1),
        }))
        .unwrap();
        let mut errors = FieldErrors::new();
        assert!(required_string(&object, "at_cap", &mut errors).is_some());
        assert!(required_string(&object, "over_cap", &mut errors).is_none());
        assert_eq!(errors.keys().collect::<Vec<_>>(), ["over_cap"]);
    }
}
