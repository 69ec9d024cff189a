from bupmesh.cli import main

raise SystemExit(main())
