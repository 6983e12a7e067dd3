from chat.cli import main

raise SystemExit(main())
