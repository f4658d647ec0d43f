//! Tables whose cells never lie about being cut: column widths from what the cells hold,
//! shrinking the widest first when the screen is narrow and giving spare width to the
//! columns that can use it, and every cut value ending in `…`. The sort column's head
//! carries ▲ or ▼.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::{block, Theme};
use crate::app::{App, Pane, Sort, TableArea};

/// A column: its head, the width below which it is not shrunk, and whether it takes spare
/// width.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub head: &'static str,
    pub min: u16,
    pub grow: bool,
}

pub const fn col(head: &'static str, min: u16) -> Col {
    Col {
        head,
        min,
        grow: false,
    }
}

pub const fn grow(head: &'static str, min: u16) -> Col {
    Col {
        head,
        min,
        grow: true,
    }
}

fn width(s: &str) -> u16 {
    s.chars().count().min(u16::MAX as usize) as u16
}

/// `s` in at most `w` columns; a cut ends in `…`.
pub fn fit(s: &str, w: u16) -> String {
    let w = w as usize;
    if s.chars().count() <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(w - 1).collect();
    out.push('…');
    out
}

/// Widths for `cols` in `avail` columns (one space between columns). Each column wants the
/// width of its widest cell; if they do not all fit the widest shrink first, down to their
/// minimum; spare width goes to the growing columns.
pub fn widths(avail: u16, cols: &[Col], cells: &[Vec<String>], heads: &[String]) -> Vec<u16> {
    let n = cols.len();
    let mut w: Vec<u16> = (0..n)
        .map(|i| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| width(c))
                .chain(std::iter::once(width(&heads[i])))
                .max()
                .unwrap_or(0)
                .max(1)
        })
        .collect();
    let avail = avail.saturating_sub(n.saturating_sub(1) as u16);
    let mut total: u32 = w.iter().map(|x| *x as u32).sum();
    while total > avail as u32 {
        // Shrink the widest column that may still shrink.
        let Some(i) = (0..n)
            .filter(|&i| w[i] > cols[i].min.max(1))
            .max_by_key(|&i| (w[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        w[i] -= 1;
        total -= 1;
    }
    let growers: Vec<usize> = (0..n).filter(|&i| cols[i].grow).collect();
    if total < avail as u32 && !growers.is_empty() {
        let spare = (avail as u32 - total) as u16;
        let each = spare / growers.len() as u16;
        let mut rest = spare % growers.len() as u16;
        for &i in &growers {
            w[i] += each + u16::from(rest > 0);
            rest = rest.saturating_sub(1);
        }
    }
    w
}

/// One table to draw.
pub struct Spec {
    pub title: String,
    pub cols: Vec<Col>,
    /// Cells as text, each with its style.
    pub rows: Vec<Vec<(String, Style)>>,
    pub sort: Option<Sort>,
    pub focused: bool,
    pub selected: Option<usize>,
    /// Figures of a broker that cannot be reached: shown dimmed.
    pub stale: bool,
}

/// Draw a table; returns where its rows are, and the first row shown.
pub fn draw_table(f: &mut Frame, theme: &Theme, area: Rect, spec: Spec) -> TableArea {
    let heads: Vec<String> = spec
        .cols
        .iter()
        .enumerate()
        .map(|(i, c)| match spec.sort {
            Some(s) if s.col == i => format!("{}{}", c.head, if s.desc { "▼" } else { "▲" }),
            _ => c.head.to_string(),
        })
        .collect();
    let texts: Vec<Vec<String>> = spec
        .rows
        .iter()
        .map(|r| r.iter().map(|(t, _)| t.clone()).collect())
        .collect();
    let inner = area.width.saturating_sub(2);
    let w = widths(inner, &spec.cols, &texts, &heads);
    let rows: Vec<Row> =
        spec.rows
            .into_iter()
            .map(|r| {
                Row::new(r.into_iter().enumerate().map(|(i, (t, st))| {
                    Cell::from(fit(&t, w.get(i).copied().unwrap_or(0))).style(st)
                }))
            })
            .collect();
    let header = Row::new(
        heads
            .iter()
            .enumerate()
            .map(|(i, h)| Cell::from(fit(h, w.get(i).copied().unwrap_or(0)))),
    )
    .style(theme.bold());
    let mut table = Table::new(rows, w.iter().map(|x| Constraint::Length(*x)))
        .column_spacing(1)
        .header(header)
        .block(block(
            fit(&spec.title, area.width.saturating_sub(2)),
            spec.focused,
            theme,
        ))
        .row_highlight_style(if spec.focused {
            theme.selected()
        } else {
            theme.bold()
        });
    if spec.stale {
        table = table.style(Style::default().add_modifier(Modifier::DIM));
    }
    let mut state = TableState::default().with_selected(spec.selected);
    f.render_stateful_widget(table, area, &mut state);
    TableArea {
        top: area.y + 2,
        bottom: area.y + area.height.saturating_sub(1),
        left: area.x,
        right: area.x + area.width,
        offset: state.offset(),
    }
}

/// What a pane's table holds.
pub struct Rows {
    pub title: String,
    pub cols: Vec<Col>,
    pub rows: Vec<Vec<(String, Style)>>,
}

/// Draw the table of a pane: its selection, its sort, and its rows' area for the mouse.
pub fn draw_pane_table(
    f: &mut Frame,
    app: &mut App,
    theme: &Theme,
    pane: Pane,
    area: Rect,
    r: Rows,
) {
    let Rows { title, cols, rows } = r;
    let n = rows.len();
    let spec = Spec {
        title,
        cols,
        rows,
        sort: (pane != Pane::Stream).then(|| app.view(pane).sort),
        focused: app.pane == pane && app.drill.is_none(),
        selected: (n > 0).then(|| app.selected(pane)),
        stale: app.stale(),
    };
    app.areas[pane.index()] = draw_table(f, theme, area, spec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_value_ends_in_an_ellipsis() {
        assert_eq!(fit("900001..1000000", 15), "900001..1000000");
        assert_eq!(fit("900001..1000000", 10), "900001..1…");
        assert_eq!(fit("abc", 1), "…");
    }

    #[test]
    fn the_widest_column_shrinks_first_and_spare_width_goes_to_growers() {
        let cols = [col("A", 4), grow("B", 4), col("C", 2)];
        let heads: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
        let cells = vec![vec!["aaaaaaaaaa".into(), "bbbbbb".into(), "cc".into()]];
        assert_eq!(widths(40, &cols, &cells, &heads), vec![10, 26, 2]);
        // 14 columns for 18 wanted plus 2 spaces: A (10) shrinks to 6.
        assert_eq!(widths(14 + 2 - 4, &cols, &cells, &heads), vec![4, 4, 2]);
        assert_eq!(widths(16, &cols, &cells, &heads), vec![6, 6, 2]);
    }
}
