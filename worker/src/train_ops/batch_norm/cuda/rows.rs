//! Which rows of the channels-last activations each thread of BatchNorm's elementwise passes
//! ([`super::normalize`], [`super::pooled`]) takes, and where a row's statistics lie.

use cubecl::prelude::*;

/// Threads per cube of both passes.
pub(super) const CUBE_THREADS: usize = 256;

/// Rows each thread takes, all loaded before any is written (the output may alias nothing, but
/// the compiler cannot know: loads after a store would wait for it), and the per-channel terms
/// read once for all of them: one row a thread read six per-channel vectors for each vector of
/// activations, and the passes ran at 2.0–2.5 TB/s on an H100.
pub(super) const ROWS_PER_THREAD: usize = 4;

/// Launch geometry of both passes over `rows` channels-last rows of `row_vectors` channel
/// vectors: cubes of `(X, Y)` threads, thread `(i, j)` of cube `(p, b)` on channel vector
/// `b·X + i` and rows `p·Y·R + j + k·Y` (`k < R` = [`ROWS_PER_THREAD`]); and whether a group
/// of `rows_per_group` rows can change within a cube (then each row finds its own).
pub(super) fn rows_geometry(
    rows: usize,
    row_vectors: usize,
    rows_per_group: usize,
) -> (CubeDim, CubeCount, bool) {
    let x = row_vectors.min(CUBE_THREADS);
    let y = CUBE_THREADS / x;
    let cube_rows = y * ROWS_PER_THREAD;
    let count = CubeCount::Static(rows.div_ceil(cube_rows) as u32, row_vectors.div_ceil(x) as u32, 1);
    (CubeDim::new_2d(x as u32, y as u32), count, !rows_per_group.is_multiple_of(cube_rows))
}

/// The thread's channel vector and first row under [`rows_geometry`], and whether that vector
/// is one of the channels' (the last block of them may overhang).
#[cube]
pub(super) fn thread_rows(row_vectors: usize) -> (usize, usize, bool) {
    let cv = CUBE_POS_Y as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let first = CUBE_POS_X as usize * CUBE_DIM_Y as usize * ROWS_PER_THREAD + UNIT_POS_Y as usize;
    (cv, first, cv < row_vectors)
}

/// Where the statistics of channel vector `cv` in `row` lie: `[G, C]`, `rows_per_group` rows
/// a group (with one group, every row's is `cv`).
#[cube]
pub(super) fn statistic_at(row: usize, cv: usize, row_vectors: usize, rows_per_group: usize) -> usize {
    row / rows_per_group * row_vectors + cv
}
