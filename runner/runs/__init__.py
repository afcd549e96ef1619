"""The run machinery, one wing for a single run and for many: plan (a request made whole),
prepare (data, method, context), execute (one run, start to end), parent (a parent run over
child runs: --seeds, sweep, reproduce, tune), pool (runs side by side in processes of their
own, one stop policy), placement (how many at once, on which device, with how many threads),
plugins (the manager) and tune (the Optuna study and its workers). Commands call it; it calls
the kernel and the toolkits."""
