//! The name PostgreSQL reports for a client encoding: drivers pick their codec from the
//! `client_encoding` ParameterStatus, so sluice, answering a login itself, must spell it as the
//! server would (`eucjp`, `euc-jp` and `EUC_JP` are all reported as `EUC_JP`).

/// PostgreSQL's alias table (src/common/encnames.c): names as `clean_encoding_name` leaves them
/// (ASCII letters and digits, lowercased), with the canonical name each stands for. Sorted.
const ALIASES: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

/// The canonical name of encoding `name` as the server would report it; `None` for a name
/// PostgreSQL does not know (the server refuses it when the session first runs).
pub fn canonical(name: &str) -> Option<&'static str> {
    if name == "UNICODE" {
        // Kept as written by the server too, for pre-9.1 pgjdbc, which reads it back.
        return Some("UNICODE");
    }
    // As clean_encoding_name: keep letters and digits, lowercased; drop the rest.
    let clean: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    ALIASES
        .binary_search_by(|(alias, _)| alias.cmp(&clean.as_str()))
        .ok()
        .map(|i| ALIASES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_sorted_for_the_binary_search() {
        assert!(ALIASES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn names_are_reported_as_the_server_reports_them() {
        for (name, want) in [
            ("eucjp", Some("EUC_JP")),
            ("euc-jp", Some("EUC_JP")),
            ("EUC_JP", Some("EUC_JP")),
            ("koi8", Some("KOI8R")),
            ("utf-8", Some("UTF8")),
            ("Unicode", Some("UTF8")),
            ("UNICODE", Some("UNICODE")),
            ("iso-8859-1", Some("LATIN1")),
            ("ISO_8859_5", Some("ISO_8859_5")),
            ("Windows-1252", Some("WIN1252")),
            ("shift_jis_2004", Some("SHIFT_JIS_2004")),
            ("sql_ascii", Some("SQL_ASCII")),
            ("klingon", None),
        ] {
            assert_eq!(canonical(name), want, "{name}");
        }
    }
}
