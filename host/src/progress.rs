//! Progress indicators for long work (compiling a component, building an
//! agent, creating a sandbox). Shown only when stderr is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner with `message`, cleared when the returned bar is dropped.
pub fn spinner(message: impl Into<String>) -> Spinner {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(100));
    Spinner(bar)
}

pub struct Spinner(ProgressBar);

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
