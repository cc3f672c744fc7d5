//! Questions on the terminal, answered the way patronictl (click) takes
//! answers: one line each, from a person or from a pipe (`printf 'y\n' |
//! pghactl ...`), with the same prompt texts. Input that ends before the
//! answer aborts the command ("Aborted!") rather than assuming a default.

use std::io::{BufRead, IsTerminal, Read, Write};

use super::CtlError;

/// Where answers come from.
pub struct Console {
    input: Box<dyn BufRead + Send>,
    /// Whether the input is a terminal (then a password is read without echo).
    tty: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("tty", &self.tty).finish()
    }
}

impl Console {
    /// Answers from standard input.
    pub fn stdin() -> Self {
        let stdin = std::io::stdin();
        let tty = stdin.is_terminal();
        Console {
            input: Box::new(std::io::BufReader::new(stdin)),
            tty,
        }
    }

    /// Answers from a fixed text (tests).
    pub fn from_text(text: &str) -> Self {
        Console {
            input: Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            tty: false,
        }
    }

    fn show(&self, text: &str) {
        let mut out = std::io::stdout();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// One line without its line ending; `None` at the end of the input.
    fn line(&mut self) -> Result<Option<String>, CtlError> {
        let mut buf = String::new();
        match self.input.read_line(&mut buf) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(buf.trim_end_matches(['\n', '\r']).to_string())),
            Err(e) => Err(CtlError::Failed(format!("cannot read the answer: {e}"))),
        }
    }

    /// click's `prompt`: `question [default]: `; an empty answer takes the
    /// default, or asks again when there is none.
    pub fn prompt(&mut self, question: &str, default: Option<&str>) -> Result<String, CtlError> {
        let text = match default {
            Some(d) => format!("{question} [{d}]: "),
            None => format!("{question}: "),
        };
        loop {
            self.show(&text);
            let Some(answer) = self.line()? else {
                return Err(CtlError::Aborted);
            };
            match (answer.is_empty(), default) {
                (false, _) => return Ok(answer),
                (true, Some(d)) => return Ok(d.to_string()),
                (true, None) => continue,
            }
        }
    }

    /// click's `confirm`: `question [y/N]: `; `y`/`yes`/`n`/`no` in any
    /// case, empty for the default, anything else asks again.
    pub fn confirm(&mut self, question: &str, default: bool) -> Result<bool, CtlError> {
        let choices = if default { "Y/n" } else { "y/N" };
        loop {
            self.show(&format!("{question} [{choices}]: "));
            let Some(answer) = self.line()? else {
                return Err(CtlError::Aborted);
            };
            match answer.trim().to_lowercase().as_str() {
                "y" | "yes" => return Ok(true),
                "n" | "no" => return Ok(false),
                "" => return Ok(default),
                _ => eprintln!("Error: invalid input"),
            }
        }
    }

    /// Everything left on the input (`edit-config --apply -`).
    pub fn read_to_end(&mut self) -> Result<String, CtlError> {
        let mut text = String::new();
        self.input
            .read_to_string(&mut text)
            .map_err(|e| CtlError::Failed(format!("cannot read standard input: {e}")))?;
        Ok(text)
    }

    /// A secret: not echoed when typed on a terminal. The question goes to
    /// standard error (as Python's getpass writes it), so standard output
    /// holds only the results.
    pub fn password(&mut self, question: &str) -> Result<String, CtlError> {
        let mut err = std::io::stderr();
        let _ = write!(err, "{question}: ");
        let _ = err.flush();
        let _echo = if self.tty { EchoOff::new() } else { None };
        let answer = self.line()?;
        if self.tty {
            let _ = writeln!(err);
        }
        answer.ok_or(CtlError::Aborted)
    }
}

/// Turns terminal echo off until dropped.
struct EchoOff {
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn new() -> Option<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).ok()?;
        Some(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_line_by_line_and_end_of_input_aborts() {
        let mut c = Console::from_text("\nnode2\nmaybe\nYES\n");
        assert_eq!(c.prompt("Primary", Some("node1")).unwrap(), "node1");
        assert_eq!(c.prompt("Candidate", Some("")).unwrap(), "node2");
        assert!(
            c.confirm("Sure?", false).unwrap(),
            "invalid input asks again"
        );
        assert!(matches!(c.confirm("Sure?", false), Err(CtlError::Aborted)));
        let mut c = Console::from_text("\n\nname\r\n");
        assert_eq!(c.prompt("Cluster", None).unwrap(), "name");
        let mut c = Console::from_text("\n");
        assert!(!c.confirm("Sure?", false).unwrap());
        assert_eq!(
            Console::from_text("pw\n").password("Password").unwrap(),
            "pw"
        );
    }
}
