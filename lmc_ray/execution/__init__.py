"""Running a sweep: what to compute (plan), which process holds which models (schedule), and the two executors that
run the plan, in this process (local) or on Ray actors (ray_sweep), with progress shown as they go."""
