//! User-defined types, looked up in each database's catalog.
//!
//! A binary value of a built-in type is read by the type's OID alone; a
//! user-defined type's OID says nothing until `pg_type` is asked: a domain
//! is its base type on the wire, an enum its label's text, a composite a
//! `record`, an array type an array of its element. sluice asks once per
//! type and database, over a connection of its own (the session's is in
//! the middle of a result when it meets the type), and keeps the answers
//! for the life of the process: type OIDs are not reused while a type
//! exists, and a type dropped and made again under a new OID is looked up
//! again.
//!
//! A lookup that fails leaves the type unknown, and a value of it that a
//! plugin wants fails the statement closed, as before the lookup existed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::codec::{UserType, UserTypes};
use crate::upstream::Upstream;

/// How many rounds of lookups follow references (a domain over a domain
/// over an enum array...) before the rest is left unknown.
const MAX_ROUNDS: usize = 8;

/// The user-defined types sluice has looked up, per database.
#[derive(Debug, Default)]
pub struct TypeCatalog {
    databases: Mutex<HashMap<String, Arc<UserTypes>>>,
    /// One lookup at a time: sessions meeting the same new type at once
    /// wait for the first one's answer instead of each asking.
    lookup: tokio::sync::Mutex<()>,
}

impl TypeCatalog {
    /// What is known of `database`'s types now.
    pub fn known(&self, database: &str) -> Arc<UserTypes> {
        let databases = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        databases.get(database).cloned().unwrap_or_default()
    }

    /// What is known of `database`'s types once those of `wanted` (and the
    /// types they refer to) that sluice has not looked up yet have been.
    pub async fn resolve(
        &self,
        upstream: &Upstream,
        database: &str,
        wanted: impl IntoIterator<Item = u32>,
    ) -> Arc<UserTypes> {
        let known = self.known(database);
        let mut missing: Vec<u32> = wanted
            .into_iter()
            .filter(|&oid| known.needs_lookup(oid))
            .collect();
        if missing.is_empty() {
            return known;
        }
        let _one_at_a_time = self.lookup.lock().await;
        // Another session may have looked them up while this one waited.
        let mut types = (*self.known(database)).clone();
        missing.retain(|&oid| types.needs_lookup(oid));
        for _ in 0..MAX_ROUNDS {
            missing.sort_unstable();
            missing.dedup();
            if missing.is_empty() {
                break;
            }
            let mut fields = Vec::new();
            match lookup(upstream, database, &missing).await {
                Ok(found) => {
                    for &oid in &missing {
                        // A type that is gone is nothing sluice can read.
                        let (kind, field_types) = found
                            .get(&oid)
                            .cloned()
                            .unwrap_or((UserType::Other, Vec::new()));
                        types.insert(oid, kind);
                        fields.extend(field_types);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, database, types = ?missing, "could not look up user-defined types; their binary values will be refused");
                    break;
                }
            }
            // Next: what these types are made of. A composite's values
            // name their fields' types, so those are looked up too.
            missing = types.missing_references();
            missing.extend(fields.into_iter().filter(|&oid| types.needs_lookup(oid)));
        }
        let types = Arc::new(types);
        self.databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(database.to_owned(), types.clone());
        types
    }
}

/// What one type is, and for a composite its fields' types.
type Found = (UserType, Vec<u32>);

/// Asks `pg_type` (and `pg_attribute`, for composites' fields) about
/// `oids`. OIDs are numbers, written into the query as they are: nothing
/// of a client's text goes in.
async fn lookup(
    upstream: &Upstream,
    database: &str,
    oids: &[u32],
) -> Result<HashMap<u32, Found>, crate::upstream::Error> {
    let list = oids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT t.oid, t.typtype, t.typbasetype, t.typelem, t.typcategory, t.typlen, \
         (SELECT string_agg(a.atttypid::text, ',') FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) \
         FROM pg_catalog.pg_type t WHERE t.oid IN ({list})"
    );
    let rows = upstream.catalog_query(database, &sql).await?;
    Ok(rows.iter().filter_map(|row| classify(row)).collect())
}

/// One row of the lookup as what sluice makes of it.
fn classify(row: &[Option<String>]) -> Option<(u32, Found)> {
    let [oid, typtype, base, element, category, length, fields] = row else {
        return None;
    };
    let field_types = fields
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter_map(|oid| oid.parse::<u32>().ok())
        .collect();
    let number = |value: &Option<String>| value.as_deref()?.parse::<u32>().ok();
    let oid = number(oid)?;
    let kind = match typtype.as_deref()? {
        "d" => UserType::Domain {
            base: number(base)?,
        },
        "e" => UserType::Enum,
        "c" => UserType::Composite,
        "b" if category.as_deref() == Some("A") && length.as_deref() == Some("-1") => {
            match number(element)? {
                0 => UserType::Other,
                element => UserType::Array { element },
            }
        }
        _ => UserType::Other,
    };
    Some((oid, (kind, field_types)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[&str]) -> Vec<Option<String>> {
        values
            .iter()
            .map(|v| (!v.is_empty()).then(|| (*v).to_owned()))
            .collect()
    }

    #[test]
    fn catalog_rows_say_how_a_type_is_read() {
        assert_eq!(
            classify(&row(&["16400", "d", "25", "0", "S", "-1", ""])),
            Some((16400, (UserType::Domain { base: 25 }, vec![])))
        );
        assert_eq!(
            classify(&row(&["16401", "e", "0", "0", "E", "4", ""])),
            Some((16401, (UserType::Enum, vec![])))
        );
        assert_eq!(
            classify(&row(&["16402", "c", "0", "0", "C", "-1", "25,16400"])),
            Some((16402, (UserType::Composite, vec![25, 16400])))
        );
        assert_eq!(
            classify(&row(&["16403", "b", "0", "16401", "A", "-1", ""])),
            Some((16403, (UserType::Array { element: 16401 }, vec![])))
        );
        // A base type of an extension, a range: not readable.
        assert_eq!(
            classify(&row(&["16404", "b", "0", "0", "S", "-1", ""])),
            Some((16404, (UserType::Other, vec![])))
        );
        assert_eq!(
            classify(&row(&["16405", "r", "0", "0", "R", "-1", ""])),
            Some((16405, (UserType::Other, vec![])))
        );
        // A fixed-length type with an element type is not an array on the
        // wire.
        assert_eq!(
            classify(&row(&["16406", "b", "0", "18", "A", "64", ""])),
            Some((16406, (UserType::Other, vec![])))
        );
        // Malformed rows are skipped.
        assert_eq!(classify(&row(&["x", "d", "25", "0", "S", "-1", ""])), None);
        assert_eq!(
            classify(&row(&["16407", "d", "", "0", "S", "-1", ""])),
            None
        );
        assert_eq!(classify(&row(&["16408", "d"])), None);
    }
}
