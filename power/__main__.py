from power.cli import main

raise SystemExit(main())
