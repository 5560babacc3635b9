"""Tables and their API schemas side by side (SQLModel's Base / table / Public / Create /
Update pattern), one module per resource:

- base: naming convention, controlled vocabularies, write-model bases
- indicator: units, dimensions, comparability families, indicators
- city: cities and the industries a source names for them
- source: sources
- observation: observations, derivations, revisions, their write models
- curation: API keys and the audit trail
- views: composite read views

Natural codes (slugs such as ``ningbo``) are the keys of the reference tables, so CSV exports
and imports read the same as the API. Observations and sources have integer ids.
"""

from app.models.base import *  # noqa: F403  (first: it sets the naming convention)
from app.models.city import *  # noqa: F403
from app.models.curation import *  # noqa: F403
from app.models.indicator import *  # noqa: F403
from app.models.observation import *  # noqa: F403
from app.models.source import *  # noqa: F403
from app.models.views import *  # noqa: F403
