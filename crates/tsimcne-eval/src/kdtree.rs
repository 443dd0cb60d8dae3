//! An exact k-d tree for 1- to 3-dimensional points (maps).
//!
//! Distances are squared Euclidean, summed in f64 over the dimensions in
//! order from the f32 coordinates, which is what scikit-learn's `KDTree`
//! computes, so equal distances compare equal in both.
//!
//! **Invariant:** a query returns the `k` base points that are smallest in
//! (distance, index) order; pruning only skips boxes strictly farther than
//! the current k-th distance, so ties are never lost.

use crate::topk::TopK;

/// Most points in a leaf.
const LEAF: usize = 16;

#[derive(Clone, Debug)]
struct Node {
    lo: [f64; 3],
    hi: [f64; 3],
    /// Range into `KdTree::order`.
    start: u32,
    end: u32,
    /// Children (`u32::MAX` for a leaf).
    left: u32,
    right: u32,
}

/// A k-d tree over a subset of the rows of a point matrix.
#[derive(Clone, Debug)]
pub struct KdTree {
    /// Coordinates padded to 3 dimensions with zeros, in `order`.
    coords: Vec<[f64; 3]>,
    /// The row index of every stored point.
    order: Vec<u32>,
    nodes: Vec<Node>,
}

pub(crate) fn point(values: &[f32], dim: usize, row: usize) -> [f64; 3] {
    let mut p = [0.0; 3];
    for (d, v) in p.iter_mut().zip(&values[row * dim..(row + 1) * dim]) {
        *d = f64::from(*v);
    }
    p
}

#[inline]
fn dist(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let d0 = a[0] - b[0];
    let d1 = a[1] - b[1];
    let d2 = a[2] - b[2];
    // The same order of additions as a left-to-right sum.
    d0 * d0 + d1 * d1 + d2 * d2
}

impl KdTree {
    /// Builds the tree over rows `base` of `values` (`dim` ≤ 3 floats a row).
    pub fn build(values: &[f32], dim: usize, base: &[u32]) -> Self {
        assert!((1..=3).contains(&dim), "k-d tree is for 1 to 3 dimensions");
        let mut pts: Vec<([f64; 3], u32)> = base
            .iter()
            .map(|&r| (point(values, dim, r as usize), r))
            .collect();
        let mut nodes = Vec::with_capacity(2 * base.len() / LEAF + 1);
        if !pts.is_empty() {
            build_node(&mut pts, 0, dim, &mut nodes);
        }
        let (coords, order) = pts.into_iter().unzip();
        Self {
            coords,
            order,
            nodes,
        }
    }

    /// The `k` nearest stored points to `q`, leaving out row `exclude`.
    pub fn query(&self, q: &[f64; 3], exclude: Option<u32>, top: &mut TopK) {
        if self.nodes.is_empty() {
            return;
        }
        let mut stack: Vec<(u32, f64)> = vec![(0, 0.0)];
        while let Some((n, bound)) = stack.pop() {
            if bound > top.worst() {
                continue;
            }
            let node = &self.nodes[n as usize];
            if node.left == u32::MAX {
                for i in node.start as usize..node.end as usize {
                    let row = self.order[i];
                    if Some(row) != exclude {
                        top.push(dist(q, &self.coords[i]), row);
                    }
                }
                continue;
            }
            let (l, r) = (node.left as usize, node.right as usize);
            let (dl, dr) = (box_dist(q, &self.nodes[l]), box_dist(q, &self.nodes[r]));
            // Push the farther child first so the nearer one is searched first.
            if dl <= dr {
                stack.push((r as u32, dr));
                stack.push((l as u32, dl));
            } else {
                stack.push((l as u32, dl));
                stack.push((r as u32, dr));
            }
        }
    }
}

/// Squared distance from `q` to the node's bounding box (a lower bound on
/// the distance to any point in it, computed like `dist`, so never larger).
#[inline]
fn box_dist(q: &[f64; 3], node: &Node) -> f64 {
    let mut d = [0.0; 3];
    for k in 0..3 {
        d[k] = if q[k] < node.lo[k] {
            node.lo[k] - q[k]
        } else if q[k] > node.hi[k] {
            q[k] - node.hi[k]
        } else {
            0.0
        };
    }
    d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
}

fn build_node(pts: &mut [([f64; 3], u32)], start: usize, dim: usize, nodes: &mut Vec<Node>) -> u32 {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for (p, _) in pts.iter() {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let id = nodes.len() as u32;
    nodes.push(Node {
        lo,
        hi,
        start: start as u32,
        end: (start + pts.len()) as u32,
        left: u32::MAX,
        right: u32::MAX,
    });
    let axis = (0..dim)
        .max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b])))
        .unwrap_or(0);
    if pts.len() <= LEAF || hi[axis] == lo[axis] {
        return id;
    }
    let mid = pts.len() / 2;
    pts.select_nth_unstable_by(mid, |a, b| a.0[axis].total_cmp(&b.0[axis]));
    let (left, right) = pts.split_at_mut(mid);
    let l = build_node(left, start, dim, nodes);
    let r = build_node(right, start + mid, dim, nodes);
    nodes[id as usize].left = l;
    nodes[id as usize].right = r;
    id
}
