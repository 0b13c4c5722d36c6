from gemmlab.cli import main

raise SystemExit(main())
