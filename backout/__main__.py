from backout.cli import main

raise SystemExit(main())
