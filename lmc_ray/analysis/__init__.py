"""From a store to findings: barriers along the lines (barriers), basins (clusters), per-basin generalization
(findings), the HTML report (report), and a point of a line as a model (export)."""
