from xft.cli import main

raise SystemExit(main())
