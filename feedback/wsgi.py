import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")
# As get_wsgi_application() does, before importing what imports the models.
django.setup(set_prefix=False)

from feedback.keyed_api import application_with_keyed_api  # noqa: E402

application = application_with_keyed_api()
