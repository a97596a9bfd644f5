//! Which result columns to look at: all but those whose type can never
//! show a card number.
//!
//! A type is skipped only when its text form can never hold a run of 13
//! digits (a card number's fewest) and sluice does not present its binary
//! form as text either. Everything else is looked at — text of every kind,
//! `int8` and `numeric` (a card number stored as a number), floats, JSON,
//! `bytea`, arrays and records of anything else, `unknown` (705, a type
//! sluice could not learn) and every user-defined type: when in doubt,
//! look.

/// The types never looked at, with their array types.
const NEVER_A_CARD_NUMBER: [u32; 36] = [
    16, 1000, // bool, bool[]
    18, 1002, // "char", "char"[]
    21, 1005, // int2, int2[]
    23, 1007, // int4, int4[]
    26, 1028, // oid, oid[]
    1082, 1182, // date, date[]
    1083, 1183, // time, time[]
    1266, 1270, // timetz, timetz[]
    1114, 1115, // timestamp, timestamp[]
    1184, 1185, // timestamptz, timestamptz[]
    1186, 1187, // interval, interval[]
    2950, 2951, // uuid, uuid[]
    869, 1041, // inet, inet[]
    650, 651, // cidr, cidr[]
    829, 1040, // macaddr, macaddr[]
    774, 775, // macaddr8, macaddr8[]
    1560, 1561, // bit, bit[]
    1562, 1563, // varbit, varbit[]
];

/// Whether values of the type with OID `type_oid` may hold a card number.
pub fn may_hold_card_numbers(type_oid: u32) -> bool {
    !NEVER_A_CARD_NUMBER.contains(&type_oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_numbers_and_unknown_types_are_looked_at() {
        for oid in [
            25,    // text
            1043,  // varchar
            1042,  // bpchar
            19,    // name
            20,    // int8
            1700,  // numeric
            700,   // float4
            701,   // float8
            114,   // json
            3802,  // jsonb
            17,    // bytea
            1009,  // text[]
            1016,  // int8[]
            2249,  // record
            705,   // unknown
            16384, // a user-defined type
        ] {
            assert!(may_hold_card_numbers(oid), "{oid}");
        }
    }

    #[test]
    fn short_fixed_forms_are_skipped() {
        for oid in [16, 21, 23, 26, 1082, 1114, 1184, 2950, 2951, 869, 1563] {
            assert!(!may_hold_card_numbers(oid), "{oid}");
        }
    }
}
