"""Reports and the evidence bundle of a run, all rendered from one `results.json`.

    workers (xdist) / the single process            controller                      reports/<run-id>/
    ───────────────────────────────────             ─────────────────────           ─────────────────
    makereport: report.netconform = {check,         pytest_runtest_logreport   ──▶  results.json
      target, message}, report.netconform_evidence    → model.ResultsBuilder          report.md   (markdown)
      (plain JSON: xdist serialises report.__dict__)  sessionfinish:                   junit.xml   (junit)
                                                       collect.collect_raw (netns)      report.html (htmlreport,
                                                       bundle.write_bundle               through pytest-html)
                                                       redact, gate, render        ──▶  pod_*/ node_*/ cluster/ aws/

Every renderer is a pure function of the results dict, so `netconform report DIR` re-renders a
results.json copied out of a cluster exactly as the run did. This package imports nothing heavy
at the top: `commands` is a probe module that runs inside netns workers.
"""
