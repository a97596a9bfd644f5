//! The text of server messages: error and notice fields, the column names
//! of a RowDescription, reported parameters (ParameterStatus) and
//! notifications. Each message is masked with one plugin call, its texts
//! joined ([`super::mask_texts`]), and re-encoded only when something
//! changed.

use bytes::BytesMut;
use pgwire::messages::data::{FieldDescription, RowDescription};
use pgwire::messages::response::{ErrorResponse, NoticeResponse, NotificationResponse};
use pgwire::messages::startup::ParameterStatus;

use super::mask_texts;
use crate::plugin::{Fault, PluginSet};
use crate::protocol::{reply, tag};

/// Masks the text fields of an ErrorResponse or NoticeResponse (everything
/// but severity and SQLSTATE). `None` when nothing changed.
pub async fn mask_fields(
    plugins: &PluginSet,
    fields: &[(u8, String)],
) -> Result<Option<Vec<(u8, String)>>, Fault> {
    let texts: Vec<(usize, &str)> = fields
        .iter()
        .enumerate()
        .filter(|(_, (kind, _))| !matches!(kind, b'S' | b'V' | b'C'))
        .map(|(index, (_, value))| (index, value.as_str()))
        .collect();
    let only_texts: Vec<&str> = texts.iter().map(|(_, text)| *text).collect();
    let Some(masked) = mask_texts(plugins, &only_texts).await? else {
        return Ok(None);
    };
    let mut fields = fields.to_vec();
    for ((index, _), text) in texts.into_iter().zip(masked) {
        fields[index].1 = text;
    }
    Ok(Some(fields))
}

/// Re-encodes an ErrorResponse (`E`) or NoticeResponse (`N`).
pub fn encode_fields(tag_byte: u8, fields: Vec<(u8, String)>, out: &mut BytesMut) {
    if tag_byte == tag::ERROR_RESPONSE {
        reply::encode(&ErrorResponse::new(fields), out);
    } else {
        reply::encode(&NoticeResponse::new(fields), out);
    }
}

/// A RowDescription with its column names masked (`SELECT 1 AS
/// "4111111111111111"`), encoded; `None` when no name changed.
pub async fn mask_column_names(
    plugins: &PluginSet,
    description: &RowDescription,
) -> Result<Option<BytesMut>, Fault> {
    let names: Vec<&str> = description.fields.iter().map(|f| f.name.as_str()).collect();
    let Some(masked) = mask_texts(plugins, &names).await? else {
        return Ok(None);
    };
    let fields = description
        .fields
        .iter()
        .zip(masked)
        .map(|(field, name)| {
            FieldDescription::new(
                name,
                field.table_id,
                field.column_id,
                field.type_id,
                field.type_size,
                field.type_modifier,
                field.format_code,
            )
        })
        .collect();
    let mut out = BytesMut::new();
    reply::encode(&RowDescription::new(fields), &mut out);
    Ok(Some(out))
}

/// A ParameterStatus with its name and value masked (`SET application_name
/// = '4111...'` is reported back), encoded; `None` when unchanged.
pub async fn mask_parameter_status(
    plugins: &PluginSet,
    status: &ParameterStatus,
) -> Result<Option<BytesMut>, Fault> {
    let Some(masked) = mask_texts(plugins, &[&status.name, &status.value]).await? else {
        return Ok(None);
    };
    let [name, value] = two(masked);
    let mut out = BytesMut::new();
    reply::encode(&ParameterStatus::new(name, value), &mut out);
    Ok(Some(out))
}

/// A NotificationResponse with its channel and payload masked, encoded;
/// `None` when unchanged.
pub async fn mask_notification(
    plugins: &PluginSet,
    notification: &NotificationResponse,
) -> Result<Option<BytesMut>, Fault> {
    let texts = [notification.channel.as_str(), notification.payload.as_str()];
    let Some(masked) = mask_texts(plugins, &texts).await? else {
        return Ok(None);
    };
    let [channel, payload] = two(masked);
    let mut out = BytesMut::new();
    reply::encode(
        &NotificationResponse::new(notification.pid, channel, payload),
        &mut out,
    );
    Ok(Some(out))
}

/// The two texts [`mask_texts`] returned for two: it returns one per text
/// it was given, having refused any plugin answer that would change that.
fn two(masked: Vec<String>) -> [String; 2] {
    masked
        .try_into()
        .expect("mask_texts returns one text per text it is given")
}
