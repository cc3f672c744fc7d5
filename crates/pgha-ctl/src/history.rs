//! `history`: the timeline switches recorded in the `history` key.

use pgha_core::model::History;
use serde_json::{Value, json};

use super::cli::HistoryArgs;
use super::output::{Format, Rows};
use super::{Ctl, CtlError, echo_raw};

/// The history as rows: TL, LSN, Reason, Timestamp, New Leader (missing
/// items empty, as patronictl pads old three-item entries).
pub fn rows(history: Option<&History>) -> Rows {
    let mut rows = Rows::new(&["TL", "LSN", "Reason", "Timestamp", "New Leader"]);
    rows.right = vec!["TL", "LSN"];
    for e in history.map(|h| h.0.as_slice()).unwrap_or_default() {
        let text = |v: &Option<String>| v.as_ref().map_or(json!(""), |s| json!(s));
        rows.rows.push(vec![
            json!(e.timeline),
            json!(e.lsn),
            Value::String(e.reason.clone()),
            text(&e.timestamp),
            text(&e.new_leader),
        ]);
    }
    rows
}

pub async fn run(ctl: &mut Ctl, args: HistoryArgs) -> Result<(), CtlError> {
    let name = ctl.cluster_name(args.cluster_name)?;
    let c = ctl.load(&name).await?;
    let format = if args.format == Format::Topology {
        Format::Pretty
    } else {
        args.format
    };
    echo_raw(rows(c.history.as_ref().map(|h| &h.value)).render(format));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_in_patronictl_formats() {
        let h = History::parse(r#"[[1,25165984,"no recovery target specified","2026-11-21T20:15:29.980446+00:00","node3"],[2,33554592,"no recovery target specified"]]"#).unwrap();
        let r = rows(Some(&h));
        assert_eq!(
            r.render(Format::Pretty),
            "+----+----------+------------------------------+----------------------------------+------------+\n\
             | TL |      LSN | Reason                       | Timestamp                        | New Leader |\n\
             +----+----------+------------------------------+----------------------------------+------------+\n\
             |  1 | 25165984 | no recovery target specified | 2026-11-21T20:15:29.980446+00:00 | node3      |\n\
             |  2 | 33554592 | no recovery target specified |                                  |            |\n\
             +----+----------+------------------------------+----------------------------------+------------+\n"
        );
        assert_eq!(
            r.render(Format::Json),
            "[{\"TL\": 1, \"LSN\": 25165984, \"Reason\": \"no recovery target specified\", \"Timestamp\": \"2026-11-21T20:15:29.980446+00:00\", \"New Leader\": \"node3\"}, \
             {\"TL\": 2, \"LSN\": 33554592, \"Reason\": \"no recovery target specified\", \"Timestamp\": \"\", \"New Leader\": \"\"}]\n"
        );
        assert!(r.render(Format::Yaml).starts_with("- LSN: 25165984\n  New Leader: node3\n  Reason: no recovery target specified\n  TL: 1\n  Timestamp: '2026-11-21T20:15:29.980446+00:00'\n"));
        assert_eq!(rows(None).render(Format::Json), "[]\n");
    }
}
