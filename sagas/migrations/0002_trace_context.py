from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sagas", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="saga",
            name="trace_context",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
