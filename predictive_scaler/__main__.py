from predictive_scaler.cli import main

raise SystemExit(main())
