//! momtui, the mom dashboard. Not built yet: it has its own issue, and this binary says so.

fn main() -> std::process::ExitCode {
    eprintln!(
        "momtui: the dashboard is not built yet. Meanwhile `momctl stats` and \
         `momctl subscribe '>'` show what the broker holds."
    );
    std::process::ExitCode::from(1)
}
