from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sagas", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="SweeperHeartbeat",
            fields=[
                (
                    "name",
                    models.CharField(max_length=50, primary_key=True, serialize=False),
                ),
                ("swept_at", models.DateTimeField()),
                ("handled", models.PositiveIntegerField(default=0)),
                ("passes", models.PositiveBigIntegerField(default=0)),
            ],
        ),
    ]
